use std::time::Instant;
use paxosd_model::*;
use stateright::{Checker, Model};

fn run(m: PaxosModel) {
    let t = Instant::now();
    let secs: u64 = std::env::var("T").map(|t| t.parse().unwrap()).unwrap_or(600); let c = m.clone().checker().threads(2).timeout(std::time::Duration::from_secs(secs)).spawn_bfs().join();
    let d = c.discoveries();
    println!("{:?} {:?} states={} unique={} depth={} done={} t={:?} disc={:?}", m.variant, m.network, c.state_count(), c.unique_state_count(), c.max_depth(), c.is_done(), t.elapsed(), d.keys().collect::<Vec<_>>());
}

#[test]
fn explore() {
    let v = std::env::var("V").unwrap_or_default();
    for variant in [Variant::Naive, Variant::MajorityNoFence, Variant::Rejoin] {
        for net in [Network::Unordered, Network::UnorderedDuplicating] {
            if !v.split(',').any(|x| x == format!("{variant:?}/{net:?}")) { continue; }
            let mut m = PaxosModel::new(variant);
            m.network = net;
            if let Ok(a) = std::env::var("A") { let a: Vec<u8> = a.split(':').map(|x| x.parse().unwrap()).collect(); m.proposers = vec![(1, a[0]), (2, a[1])]; }
            run(m);
        }
    }
}
