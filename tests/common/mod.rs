//! A local cluster of real `paxosd` processes on loopback, with temporary
//! data dirs, for integration tests. Every process it starts is killed (by
//! its own `Child` handle) when the cluster is dropped.

#![allow(dead_code)]

use paxosd::client::Client;
use paxosd::config::Config;
use paxosd::types::{Key, NodeId};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PAXOSD: &str = env!("CARGO_BIN_EXE_paxosd");
pub const PAXOSCTL: &str = env!("CARGO_BIN_EXE_paxosctl");

pub struct TestCluster {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub ports: Vec<u16>,
    pub cluster_id: u64,
    children: Vec<Option<Child>>,
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("paxosd-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Ports that were free a moment ago (bound to port 0, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> =
        (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port")).collect();
    sockets.iter().map(|s| s.local_addr().expect("local addr").port()).collect()
}

impl TestCluster {
    /// Writes a config for `n` nodes and starts them all (bootstrapping).
    pub fn start(tag: &str, n: usize) -> TestCluster {
        let mut cluster = TestCluster::configure(tag, n);
        cluster.start_all();
        cluster
    }

    /// Writes the config without starting anything.
    pub fn configure(tag: &str, n: usize) -> TestCluster {
        let addresses = free_ports(n).into_iter().map(|port| format!("127.0.0.1:{port}")).collect();
        TestCluster::configure_at(tag, addresses)
    }

    /// Writes the config of a cluster whose node i + 1 listens at
    /// `addresses[i]`, without starting anything.
    pub fn configure_at(tag: &str, addresses: Vec<String>) -> TestCluster {
        let dir = temp_dir(tag);
        let n = addresses.len();
        let cluster_id = 4242 + n as u64;
        let mut text = format!("cluster_id = {cluster_id}\n[client]\ntimeout_ms = 3000\n");
        for (i, address) in addresses.iter().enumerate() {
            let id = i + 1;
            text += &format!("[[node]]\nid = {id}\naddress = \"{address}\"\ndata_dir = \"node{id}\"\n");
        }
        let config_path = dir.join("paxosd.toml");
        std::fs::write(&config_path, text).expect("write config");
        let ports = addresses.iter().filter_map(|a| a.rsplit(':').next()?.parse().ok()).collect();
        TestCluster { dir, config_path, ports, cluster_id, children: (0..n).map(|_| None).collect() }
    }

    /// Starts every node of a configured cluster (bootstrapping) and waits
    /// until all answer.
    pub fn start_all(&mut self) {
        for id in 1..=self.ports.len() as u16 {
            self.start_node_with(id, true);
        }
        self.wait_until_all_answer();
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("test config loads")
    }

    pub fn data_dir(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    pub fn log_path(&self, id: u16) -> PathBuf {
        self.data_dir(id).join("acceptor.log")
    }

    pub fn stderr_path(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node{id}.stderr"))
    }

    pub fn stderr(&self, id: u16) -> String {
        std::fs::read_to_string(self.stderr_path(id)).unwrap_or_default()
    }

    pub fn start_node(&mut self, id: u16) {
        self.start_node_with(id, false);
    }

    pub fn start_node_with(&mut self, id: u16, bootstrap: bool) {
        self.start_node_flags(id, if bootstrap { &["--bootstrap"] } else { &[] });
    }

    /// Starts node `id` with extra command-line flags.
    pub fn start_node_flags(&mut self, id: u16, flags: &[&str]) {
        let config = self.config_path.clone();
        self.spawn(id, &config, flags);
    }

    /// Starts node `id` with extra flags and environment variables.
    pub fn start_node_env(&mut self, id: u16, flags: &[&str], env: &[(&str, &str)]) {
        let config = self.config_path.clone();
        self.spawn_env(id, &config, flags, env);
    }

    /// Starts node `id` reading another config file.
    pub fn start_node_config(&mut self, id: u16, config: &Path) {
        self.spawn(id, config, &[]);
    }

    /// Starts node `id` reading another config file, with extra flags.
    pub fn start_node_config_flags(&mut self, id: u16, config: &Path, flags: &[&str]) {
        self.spawn(id, config, flags);
    }

    fn spawn(&mut self, id: u16, config: &Path, flags: &[&str]) {
        self.spawn_env(id, config, flags, &[]);
    }

    fn spawn_env(&mut self, id: u16, config: &Path, flags: &[&str], env: &[(&str, &str)]) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path(id))
            .expect("open stderr file");
        let mut cmd = Command::new(PAXOSD);
        cmd.arg("--config").arg(config).arg("--id").arg(id.to_string());
        cmd.args(flags);
        cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(stderr);
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn paxosd");
        self.children[id as usize - 1] = Some(child);
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self, id: u16) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self, id: u16) {
        let Some(mut child) = self.children[id as usize - 1].take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {id} did not stop within 10 s of SIGTERM");
    }

    /// Waits (bounded) for node `id`'s process to exit; its exit status.
    pub fn wait_exit(&mut self, id: u16, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.children[id as usize - 1].as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.children[id as usize - 1] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id of node `id`, while this cluster runs it.
    pub fn pid(&self, id: u16) -> Option<u32> {
        self.children[id as usize - 1].as_ref().map(Child::id)
    }

    pub fn is_running(&mut self, id: u16) -> bool {
        match self.children[id as usize - 1].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits (bounded) until every running node answers a status request.
    pub fn wait_until_all_answer(&mut self) {
        for id in 1..=self.ports.len() as u16 {
            if self.children[id as usize - 1].is_some() {
                self.wait_until_answers(id);
            }
        }
    }

    pub fn wait_until_answers(&self, id: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = self.ctl(&["--node", &id.to_string(), "--timeout-ms", "300", "status"]);
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node {id} does not answer; its stderr:\n{}", self.stderr(id));
    }

    /// Node `id`'s line of `paxosctl status`, once it answers.
    pub fn status_line(&self, id: u16) -> String {
        let out = self.ctl(&["--node", &id.to_string(), "--timeout-ms", "300", "status"]);
        stdout(&out).lines().find(|l| l.starts_with(&format!("node {id} "))).unwrap_or_default().to_string()
    }

    /// Waits (bounded) until node `id` answers and is no longer catching up.
    pub fn wait_until_caught_up(&self, id: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.status_line(id).contains("  up  ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {id} did not catch up within {limit:?}; its stderr:\n{}", self.stderr(id));
    }

    /// Runs paxosctl against this cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(PAXOSCTL)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run paxosctl")
    }

    /// A paxosctl command against this cluster, to spawn.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(PAXOSCTL);
        command.arg("--config").arg(&self.config_path).args(args);
        command
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn client(&self, node: Option<u16>) -> Client {
        Client::new(&self.config(), node.map(NodeId), Duration::from_secs(5)).expect("client")
    }

    /// A key whose requests clients send to node `id` (its home: see
    /// `core::client`), with a name starting with `prefix`.
    pub fn key_homed_at(&self, id: u16, prefix: &str) -> Key {
        let members = self.children.len();
        let index = usize::from(id) - 1;
        (0..)
            .map(|i| Key(format!("{prefix}{i}").into_bytes()))
            .find(|k| paxosd::core::client::home_index(k, members) == index)
            .expect("some key is homed at every node")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u16 {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Client sessions writing at once in `in_parallel`, each on its own
/// thread.
pub const WRITERS: usize = 8;

/// Runs `op` on every item, split among `WRITERS` threads, each with a
/// client of its own: thousands of writes take seconds, not minutes.
pub fn in_parallel<T: Sync>(cluster: &TestCluster, items: &[T], op: impl Fn(&mut Client, &T) + Sync) {
    let chunk = items.len().div_ceil(WRITERS).max(1);
    std::thread::scope(|scope| {
        for part in items.chunks(chunk) {
            let op = &op;
            scope.spawn(move || {
                let mut client = cluster.client(None);
                part.iter().for_each(|item| op(&mut client, item));
            });
        }
    });
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a paxosctl run exited with `code`, showing its output if not.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "exit code; stdout: {} stderr: {}", stdout(out), stderr(out));
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
