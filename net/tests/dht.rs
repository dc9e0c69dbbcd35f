//! Real libp2p swarms on 127.0.0.1 finding each other's provider records and owners' heads.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wwt_net::index::{
    Archived, HeadRecord, LogHead, MAX_HEAD_RECORD_BYTES, head_key, open_head, replaces_head,
};
use wwt_net::node::{
    AddressRecord, Node, NodeConfig, newest_address, node_id, peer_id, replaces_address,
};
use wwt_net::types::SegmentId;
use wwt_net::{Discovery, FoundHolder, Identity, Signed};

fn config(bootstrap: Vec<String>, service: &str) -> NodeConfig {
    NodeConfig {
        service_address: Some(service.into()),
        ..NodeConfig::loopback(bootstrap)
    }
}

/// Three nodes on loopback, b and c joined through the peers `first` in turn and then a;
/// their gRPC addresses are "http://a", … Start-up that takes over a minute fails.
async fn three_nodes(first: Vec<String>) -> (Vec<Identity>, [Node; 3]) {
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
    let (a, _) = Node::start(&ids[0], config(vec![], "http://a"))
        .await
        .unwrap();
    let mut bootstrap = first;
    let own = a.listen_addrs().await.unwrap();
    assert!(!own.is_empty());
    bootstrap.extend(own.iter().map(ToString::to_string));
    let (b, _) = bounded(Node::start(&ids[1], config(bootstrap.clone(), "http://b")))
        .await
        .unwrap();
    let (c, _) = bounded(Node::start(&ids[2], config(bootstrap, "http://c")))
        .await
        .unwrap();
    (ids, [a, b, c])
}

/// `future`'s output; a failure instead of a hang if it takes over a minute.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("ended within a minute")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_swarms_find_each_others_segment_holders() {
    let (ids, [a, b, c]) = three_nodes(vec![]).await;

    let shared = SegmentId([1; 32]);
    let only_c = SegmentId([2; 32]);
    b.announce(shared).await.unwrap();
    c.announce(shared).await.unwrap();
    c.announce(only_c).await.unwrap();

    let expect_shared = vec![
        FoundHolder {
            node: ids[1].node_id(),
            address: Some("http://b".into()),
        },
        FoundHolder {
            node: ids[2].node_id(),
            address: Some("http://c".into()),
        },
    ];
    let mut expect_shared_sorted = expect_shared.clone();
    expect_shared_sorted.sort_by_key(|h| h.node);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let from_a = a.holders(shared).await.unwrap();
        let from_b = b.holders(only_c).await.unwrap();
        if from_a == expect_shared_sorted && from_b.len() == 1 && from_b[0].node == ids[2].node_id()
        {
            assert_eq!(from_b[0].address.as_deref(), Some("http://c"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holders not found: {from_a:?} / {from_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.holders(SegmentId([3; 32])).await.unwrap().is_empty());
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

#[test]
fn peer_ids_and_node_ids_name_the_same_key() {
    let id = Identity::generate().unwrap();
    let peer = peer_id(&id.node_id()).unwrap();
    assert_eq!(node_id(&peer), Some(id.node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_announcements_is_found_by_the_other_nodes() {
    let (ids, [a, b, c]) = three_nodes(vec![]).await;

    // As a provider storing pieces of many segments at once announces them.
    let segments: Vec<SegmentId> = (0..500u32)
        .map(|i| SegmentId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    // Every announcer hears back: a lost reply fails here instead of hanging.
    let announced = bounded(futures::future::join_all(
        segments.iter().map(|s| b.announce(*s)),
    ))
    .await;
    assert!(announced.iter().all(Result::is_ok), "{announced:?}");
    // The records must live on the other nodes: b leaves before anyone looks.
    b.shutdown().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    for reader in [&a, &c] {
        for segment in &segments {
            loop {
                let found = reader.holders(*segment).await.unwrap();
                if found.len() == 1 && found[0].node == ids[1].node_id() {
                    assert_eq!(found[0].address.as_deref(), Some("http://b"));
                    break;
                }
                assert!(Instant::now() < deadline, "{segment:?}: {found:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(c.holders(SegmentId([3; 32])).await.unwrap().is_empty());
    for n in [&a, &c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_fails_its_dial_and_does_not_hold_up_start_up() {
    // A port that accepts connections and never answers the handshake: a hung peer. Its
    // connections are held open until the test ends.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let silent_peer = peer_id(&Identity::generate().unwrap().node_id()).unwrap();
    let silent_addr = format!("/ip4/127.0.0.1/tcp/{silent_port}/p2p/{silent_peer}");

    // b and c try the silent peer first (each dial waits out the loopback connect timeout),
    // then join through a.
    let (ids, [a, b, c]) = three_nodes(vec![silent_addr.clone()]).await;
    // The dial must fail as timed out, not merely end.
    let error = bounded(a.dial(silent_addr.parse().unwrap()))
        .await
        .expect_err("a silent peer cannot be connected")
        .to_string();
    assert!(error.contains("Timeout"), "{error}");

    let segment = SegmentId([4; 32]);
    b.announce(segment).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = c.holders(segment).await.unwrap();
        if found.len() == 1 && found[0].node == ids[1].node_id() {
            break;
        }
        assert!(Instant::now() < deadline, "{found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
    held.abort();
}

/// Owner `owner`'s head record at `seq`.
fn head(owner: &Identity, seq: u64) -> Signed<HeadRecord> {
    head_with(owner, seq, [seq as u8; 32])
}

/// Owner `owner`'s head record at `seq`, naming entry `hash`.
fn head_with(owner: &Identity, seq: u64, hash: [u8; 32]) -> Signed<HeadRecord> {
    head_archived(owner, seq, hash, None)
}

/// Owner `owner`'s head record at `seq`, naming entry `hash` and where its log in pieces ends.
fn head_archived(
    owner: &Identity,
    seq: u64,
    hash: [u8; 32],
    archived: Option<Archived>,
) -> Signed<HeadRecord> {
    owner
        .sign(HeadRecord {
            head: LogHead { seq, hash },
            replicas: vec![Identity::generate().unwrap().node_id()],
            archived,
        })
        .unwrap()
}

#[test]
fn a_head_record_is_kept_only_over_an_older_one_of_its_owner() {
    let owner = Identity::generate().unwrap();
    let key = head_key(&owner.node_id());
    let (one, two) = (head(&owner, 1).to_bytes(), head(&owner, 2).to_bytes());
    assert!(replaces_head(&key, &one, None));
    assert!(replaces_head(&key, &two, Some(&one)));
    // A replay of an older head, or another entry at the same seq, does not displace the
    // newest; the same head signed again refreshes it.
    assert!(!replaces_head(&key, &one, Some(&two)));
    let other = head_with(&owner, 2, [9; 32]).to_bytes();
    assert!(!replaces_head(&key, &other, Some(&two)));
    assert!(replaces_head(&key, &head(&owner, 2).to_bytes(), Some(&two)));
    // Another owner's record under this owner's key, a broken signature, garbage: refused.
    let stranger = head(&Identity::generate().unwrap(), 9).to_bytes();
    assert!(!replaces_head(&key, &stranger, None));
    let mut forged = head(&owner, 9).to_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(!replaces_head(&key, &forged, None));
    assert!(!replaces_head(&key, b"not a record", None));
    // Whatever was held before, if it does not check, is replaced by a valid record.
    assert!(replaces_head(&key, &one, Some(b"junk")));
    assert!(open_head(&key, &vec![0; MAX_HEAD_RECORD_BYTES + 1]).is_err());
    // Of one head, the record whose log in pieces reaches further stays; a replay of the same
    // head from before its entry went into pieces does not displace it.
    let tail = |seq| {
        Some(Archived {
            seq,
            manifest: vec![7; 300],
        })
    };
    let stored = head_archived(&owner, 2, [2; 32], tail(2)).to_bytes();
    assert!(replaces_head(&key, &stored, Some(&two)));
    assert!(!replaces_head(&key, &two, Some(&stored)));
    let earlier = head_archived(&owner, 2, [2; 32], tail(1)).to_bytes();
    assert!(!replaces_head(&key, &earlier, Some(&stored)));
    // A record whose log in pieces goes past its head is refused.
    let past = head_archived(&owner, 2, [2; 32], tail(3)).to_bytes();
    assert!(!replaces_head(&key, &past, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_head_of_an_owner_is_found_over_replays() {
    let (_, [a, b, c]) = three_nodes(vec![]).await;
    let owner = Identity::generate().unwrap();
    assert_eq!(a.head(owner.node_id()).await.unwrap(), None);
    bounded(b.publish_head(&head(&owner, 2))).await.unwrap();
    // A stranger replays the owner's older record through another node.
    bounded(c.publish_head(&head(&owner, 1))).await.unwrap();
    // A client that only asks, joined through a.
    let bootstrap = a.listen_addrs().await.unwrap();
    let client = NodeConfig {
        client: true,
        ..NodeConfig::loopback(bootstrap.iter().map(ToString::to_string).collect())
    };
    let (d, _) = bounded(Node::start(&Identity::generate().unwrap(), client))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for reader in [&a, &d] {
        loop {
            let found = reader.head(owner.node_id()).await.unwrap();
            if found.as_ref().map(|r| r.head.seq) == Some(2) {
                assert_eq!(found.unwrap().head.hash, [2; 32]);
                break;
            }
            assert!(Instant::now() < deadline, "{found:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The owner's writer left: the record lives on the others.
    b.shutdown().await;
    assert_eq!(
        d.head(owner.node_id()).await.unwrap().map(|r| r.head.seq),
        Some(2)
    );
    for n in [&a, &c, &d] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_still_answers_for_the_records_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let (keeper, writer) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let kept = || NodeConfig {
        store_dir: Some(dir.path().to_path_buf()),
        ..config(vec![], "http://a")
    };
    let (a, a_task) = Node::start(&keeper, kept()).await.unwrap();
    let through = |node: &Node| {
        let node = node.clone();
        async move {
            let addrs = node.listen_addrs().await.unwrap();
            addrs.iter().map(ToString::to_string).collect::<Vec<_>>()
        }
    };
    let (b, b_task) = bounded(Node::start(&writer, config(through(&a).await, "http://b")))
        .await
        .unwrap();
    let segment = SegmentId([5; 32]);
    let owner = Identity::generate().unwrap();
    b.announce(segment).await.unwrap();
    bounded(b.publish_head(&head(&owner, 3))).await.unwrap();
    let held_by_b = vec![FoundHolder {
        node: writer.node_id(),
        address: Some("http://b".into()),
    }];
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.holders(segment).await.unwrap() != held_by_b
        || a.head(owner.node_id()).await.unwrap().map(|r| r.head.seq) != Some(3)
    {
        assert!(Instant::now() < deadline, "a never held b's records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both leave; a comes back from its folder (on a new port), b does not.
    for (node, task) in [(a, a_task), (b, b_task)] {
        node.shutdown().await;
        task.await.unwrap();
    }
    let (a, _) = Node::start(&keeper, kept()).await.unwrap();
    let newcomer = NodeConfig {
        client: true,
        ..NodeConfig::loopback(through(&a).await)
    };
    let (c, _) = bounded(Node::start(&Identity::generate().unwrap(), newcomer))
        .await
        .unwrap();
    // The newcomer's first lookups may leave before its connection to a is up: polled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.holders(segment).await.unwrap() != held_by_b
        || c.head(owner.node_id()).await.unwrap().map(|r| r.head.seq) != Some(3)
    {
        assert!(
            Instant::now() < deadline,
            "the restarted node lost b's records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in [&a, &c] {
        n.shutdown().await;
    }
}

#[test]
fn an_address_record_is_kept_only_over_an_older_one_of_its_node() {
    let node = Identity::generate().unwrap();
    let id = node.node_id();
    let signed = |address: &str| {
        node.sign(AddressRecord {
            address: address.into(),
        })
        .unwrap()
        .to_bytes()
    };
    let old = signed("http://old");
    std::thread::sleep(Duration::from_millis(5));
    let new = signed("http://new");
    assert!(replaces_address(&id, &old, None));
    assert!(replaces_address(&id, &new, Some(&old)));
    // A replay of the old address does not displace the new one; readers take the newest.
    assert!(!replaces_address(&id, &old, Some(&new)));
    assert_eq!(
        newest_address(&id, [old.as_slice(), new.as_slice()]).as_deref(),
        Some("http://new")
    );
    // Another node's record under this node's key, a broken signature, an unsigned address,
    // an oversized one: refused.
    let stranger = Identity::generate()
        .unwrap()
        .sign(AddressRecord {
            address: "http://evil".into(),
        })
        .unwrap()
        .to_bytes();
    assert!(!replaces_address(&id, &stranger, None));
    let mut forged = new.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(!replaces_address(&id, &forged, None));
    assert!(!replaces_address(&id, b"http://plain", None));
    assert!(!replaces_address(&id, &signed(&"x".repeat(300)), None));
    assert_eq!(
        newest_address(&id, [stranger.as_slice(), forged.as_slice()]),
        None
    );
}

/// A node restarted with its identity on another port publishes its new address, and the
/// others find that one, not the one they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_elsewhere_is_found_at_its_new_address() {
    let (ids, [a, b, c]) = three_nodes(vec![]).await;
    let found = |node: &Node, want: &'static str| {
        let node = node.clone();
        let id = ids[2].node_id();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while node.address(id).await.unwrap().as_deref() != Some(want) {
                assert!(Instant::now() < deadline, "never found {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    found(&b, "http://c").await;
    c.shutdown().await;
    let through: Vec<String> = a
        .listen_addrs()
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let (c, _) = bounded(Node::start(&ids[2], config(through, "http://c-again")))
        .await
        .unwrap();
    found(&b, "http://c-again").await;
    found(&a, "http://c-again").await;
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}
