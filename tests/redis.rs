//! Rooms and topics across nodes, over a real `redis-server` started by the
//! tests (and a three-shard Redis Cluster). Each test starts its own Redis
//! and daemons on free ports.

mod common;
#[path = "common/redis.rs"]
mod redis;

use common::{http, Daemon, Raw};
use redis::{Cluster, Redis};
use std::time::{Duration, Instant};

fn nodes(redis: &str, n: usize, extra: &[&str]) -> Vec<Daemon> {
    (0..n)
        .map(|_| {
            let mut args = vec!["--redis", redis];
            args.extend_from_slice(extra);
            Daemon::start(&args)
        })
        .collect()
}

fn metric(d: &Daemon, name: &str) -> u64 {
    common::metric_at(d.addr, name)
}

/// Waits (bounded) until `name` on `d` reaches at least `value`.
fn wait_metric(d: &Daemon, name: &str, value: u64) {
    let start = Instant::now();
    while metric(d, name) < value {
        if start.elapsed() > Duration::from_secs(10) {
            let (_, _, body) = http(d.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let body = String::from_utf8_lossy(&body);
            let lines: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
            panic!("{name} never reached {value}:\n{}", lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until Redis counts `n` subscribers of `topic`'s channel:
/// subscriptions are made asynchronously, and a message published before
/// is not delivered (at most once).
fn subscribed(r: &Redis, topic: &str, n: u32) {
    let channel = format!("wsloop:{topic}");
    let want = format!(":{n}\r\n");
    let start = Instant::now();
    while !r.cmd(&["PUBSUB", "NUMSUB", &channel]).ends_with(&want) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{topic} never had {n} subscribers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A WebSocket client of `d` on `path`.
fn member(d: &Daemon, path: &str) -> Raw {
    Raw::open_path(d.addr, path)
}

/// Sends a text message and expects `to` to receive exactly it, next.
fn relay(from: &mut Raw, to: &mut Raw, text: &str) {
    from.send_frame(true, 1, text.as_bytes());
    let f = to.read_frame();
    assert_eq!(String::from_utf8_lossy(&f.payload), text);
}

/// Proves that `c` got nothing more: a ping is answered before any stray
/// message.
fn nothing_more(c: &mut Raw) {
    c.send_frame(true, 9, b"end");
    let f = c.read_frame();
    assert_eq!(f.opcode, 0xA, "unexpected {f:?}");
}

macro_rules! need_redis {
    () => {
        if !redis::available() {
            panic!("redis-server is not installed (.ci/run installs Debian's redis-server)");
        }
    };
}

#[test]
fn a_room_spans_two_nodes_once_in_order_and_http_and_pubsub_interoperate() {
    need_redis!();
    let r = Redis::start();
    let d = nodes(&r.url(), 2, &[]);
    let mut a = member(&d[0], "/broadcast/lobby");
    let mut b = member(&d[1], "/broadcast/lobby");
    subscribed(&r, "lobby", 2);
    // 200 messages from A reach B once each, in order; A gets none back.
    for i in 0..200 {
        a.send_frame(true, 1, format!("a{i}").as_bytes());
    }
    for i in 0..200 {
        assert_eq!(b.read_frame().payload, format!("a{i}").as_bytes());
    }
    nothing_more(&mut b);
    nothing_more(&mut a);
    relay(&mut b, &mut a, "and back");
    // HTTP publish to node 0 reaches node 1's member (and node 0's).
    let body = "from the backend";
    let req = format!(
        "POST /broadcast/lobby HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(d[0].addr, req.as_bytes()).0, 202);
    assert_eq!(a.read_frame().payload, body.as_bytes());
    assert_eq!(b.read_frame().payload, body.as_bytes());
    // A /pubsub subscriber on node 0 and the room member on node 1.
    let mut sub = Raw::open_path(d[0].addr, "/pubsub");
    sub.send_frame(true, 1, br#"{"type":"subscribe","topic":"lobby","id":1}"#);
    assert_eq!(sub.read_frame().payload, br#"{"type":"ack","id":1}"#);
    relay(&mut b, &mut a, "{\"n\":1}");
    assert_eq!(
        sub.read_frame().payload,
        br#"{"type":"message","topic":"lobby","data":{"n":1}}"#
    );
    sub.send_frame(true, 1, br#"{"type":"publish","topic":"lobby","data":"hi"}"#);
    assert_eq!(b.read_frame().payload, b"hi");
    assert_eq!(a.read_frame().payload, b"hi");
    assert_eq!(metric(&d[0], "wsloop_bus_lost_total"), 0);
}

#[test]
fn presence_counts_are_cluster_wide() {
    need_redis!();
    let r = Redis::start();
    let d = nodes(&r.url(), 2, &[]);
    let text = |c: &mut Raw| String::from_utf8(c.read_frame().payload).unwrap();
    // The next join or leave notice; `count` notices (a node's members
    // learnt from its beat rather than from a join) may come between.
    let event = |c: &mut Raw| loop {
        let t = text(c);
        if !t.contains(r#""event":"count""#) {
            return t;
        }
    };
    let mut ann = member(&d[0], "/broadcast/chat?presence=1&name=Ann");
    assert!(text(&mut ann).contains(r#""event":"join","name":"Ann","members":1"#));
    subscribed(&r, "chat", 1);
    let mut bob = member(&d[1], "/broadcast/chat?presence=1&name=Bob");
    // Ann (node 0) hears of Bob's join with the count of both nodes.
    assert_eq!(
        event(&mut ann),
        r#"{"type":"presence","event":"join","name":"Bob","members":2}"#
    );
    // Bob's own notices: his join (node 1 alone knows only itself yet), then
    // the count once node 0 has told node 1 its members.
    let mut last = text(&mut bob);
    assert!(last.contains(r#""event":"join","name":"Bob""#), "{last}");
    while !last.contains(r#""members":2"#) {
        last = text(&mut bob);
        assert!(last.contains(r#""event":"count""#), "{last}");
    }
    // A third member on node 0; both see 3.
    let _cy = member(&d[0], "/broadcast/chat?presence=1&name=Cy");
    assert!(event(&mut ann).contains(r#""name":"Cy","members":3"#));
    assert!(event(&mut bob).contains(r#""name":"Cy","members":3"#));
    // Bob leaves: Ann sees it with 2.
    bob.send_frame(true, 8, &common::close_payload(1000, ""));
    bob.expect_close_echo();
    assert_eq!(
        event(&mut ann),
        r#"{"type":"presence","event":"leave","name":"Bob","members":2}"#
    );
}

#[test]
fn redis_down_keeps_local_delivery_and_up_again_resumes_without_duplicates() {
    need_redis!();
    let mut r = Redis::start();
    let d = nodes(&r.url(), 2, &[]);
    let mut a1 = member(&d[0], "/broadcast/r");
    let mut a2 = member(&d[0], "/broadcast/r");
    let mut b = member(&d[1], "/broadcast/r");
    subscribed(&r, "r", 2);
    relay(&mut a1, &mut b, "before");
    assert_eq!(a2.read_frame().payload, b"before");
    assert_eq!(ready(&d[0]), 200);
    r.kill();
    // Local delivery goes on; the node is not ready; cross-node messages
    // are dropped and counted.
    let start = Instant::now();
    while ready(&d[0]) != 503 {
        assert!(start.elapsed() < Duration::from_secs(5), "never noticed Redis was down");
        std::thread::sleep(Duration::from_millis(20));
    }
    relay(&mut a1, &mut a2, "during");
    assert!(metric(&d[0], "wsloop_bus_dropped_total") >= 1);
    r.restart();
    let back = Instant::now();
    // Cross-node delivery resumes within 2 s, without restarting wsloop.
    loop {
        a1.send_frame(true, 1, b"probe");
        assert_eq!(a2.read_frame().payload, b"probe");
        b.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut byte = [0u8; 1];
        if b.stream.peek(&mut byte).is_ok() {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(2), "not back within 2 s");
    }
    b.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    println!(
        "cross-node delivery back {} ms after Redis restarted",
        back.elapsed().as_millis()
    );
    assert_eq!(b.read_frame().payload, b"probe");
    // Exactly one copy of what follows; nothing of the outage replayed.
    relay(&mut a1, &mut b, "after");
    assert_eq!(a2.read_frame().payload, b"after");
    nothing_more(&mut b);
    assert_eq!(ready(&d[0]), 200);
    assert!(metric(&d[0], "wsloop_bus_reconnects_total") >= 1);
}

#[test]
fn a_node_cut_off_by_redis_for_falling_behind_reconnects_and_counts_the_loss() {
    need_redis!();
    // Redis cuts a pub/sub client whose output buffer passes 64 KiB.
    let r = Redis::start_with(&["--client-output-buffer-limit", "pubsub 64kb 32kb 1"]);
    // The member on node 1 may queue the whole burst (it reads it after the
    // node resumes): the cut under test is Redis's, not wsloop's.
    let d = nodes(&r.url(), 2, &["--max-backpressure", "67108864"]);
    let mut slow = member(&d[1], "/broadcast/burst");
    // Node 0 publishes over HTTP: it has no member of its own, so it does not
    // subscribe, and its link is not in pub/sub mode (the limit is Redis's
    // for every subscriber, and would cut a busy publisher too).
    let publish = |body: &[u8]| {
        let mut req = format!(
            "POST /broadcast/burst HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let (status, _, _) = http(d[0].addr, &req);
        assert_eq!(status, 202);
    };
    subscribed(&r, "burst", 1);
    // Node 1 is stopped (SIGSTOP) while node 0 publishes a burst larger than
    // the limit: Redis cuts node 1's link.
    d[1].signal("STOP");
    // More than the kernel's socket buffers on both ends hold, so that it
    // piles up in Redis.
    const BURST: u64 = 2048;
    let big = vec![b'x'; 16 << 10];
    for _ in 0..BURST {
        publish(&big);
    }
    wait_metric(&d[0], "wsloop_bus_published_total", BURST);
    assert_eq!(metric(&d[0], "wsloop_bus_dropped_total"), 0);
    assert_eq!(
        metric(&d[0], "wsloop_bus_reconnects_total"),
        0,
        "the publisher was not cut"
    );
    // Redis cut node 1: its subscription is gone.
    subscribed(&r, "burst", 0);
    d[1].signal("CONT");
    // Node 1 notices, reconnects, resubscribes, and keeps serving.
    wait_metric(&d[1], "wsloop_bus_reconnects_total", 1);
    // Its subscription is made again asynchronously (what is published
    // before is lost: at most once); Redis tells when it is there.
    subscribed(&r, "burst", 1);
    publish(b"after the cut");
    let mut got = 0;
    loop {
        let f = slow.read_frame();
        if f.payload == b"after the cut" {
            break;
        }
        got += 1;
    }
    println!("{got} of the burst arrived before the cut");
    // What was lost was counted (the sequence gap after the reconnect).
    let lost = metric(&d[1], "wsloop_bus_lost_total");
    assert!(lost > 0, "no loss counted");
    assert!(got as u64 + lost >= BURST, "{got} arrived, {lost} counted lost");
}

#[test]
fn sharded_pubsub_on_a_three_shard_cluster_follows_a_moved_slot() {
    need_redis!();
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let d: Vec<Daemon> = (0..2).map(|_| Daemon::start(&["--redis-cluster", &seeds])).collect();
    // Topics whose channels live on different shards.
    let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let mut shards = std::collections::BTreeSet::new();
    for n in &names {
        shards.insert(cluster.owner(&format!("wsloop:{n}")));
    }
    assert_eq!(shards.len(), 3, "the topics spread over the three shards");
    let mut subs = Vec::new();
    for n in &names[..6] {
        subs.push((n.clone(), member(&d[1], &format!("/broadcast/{n}"))));
    }
    wait_metric(&d[1], "wsloop_bus_up", 1);
    let mut pubs: Vec<Raw> = names[..6]
        .iter()
        .map(|n| member(&d[0], &format!("/broadcast/{n}")))
        .collect();
    let send_all = |pubs: &mut Vec<Raw>, subs: &mut Vec<(String, Raw)>, tag: &str| {
        for (p, (n, s)) in pubs.iter_mut().zip(subs.iter_mut()) {
            let text = format!("{tag} on {n}");
            p.send_frame(true, 1, text.as_bytes());
            let start = Instant::now();
            loop {
                let f = s.read_frame();
                if f.payload == text.as_bytes() {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(5));
            }
        }
    };
    // Subscriptions are made asynchronously: retry the first round.
    let start = Instant::now();
    loop {
        let mut ok = true;
        for (p, (n, s)) in pubs.iter_mut().zip(subs.iter_mut()) {
            p.send_frame(true, 1, format!("hello {n}").as_bytes());
            s.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut byte = [0u8; 1];
            ok &= s.stream.peek(&mut byte).is_ok();
        }
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "topics never delivered across the cluster"
        );
    }
    for (_, s) in subs.iter_mut() {
        s.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    }
    send_all(&mut pubs, &mut subs, "first");
    // Move the slot of the first topic to another shard: delivery goes on.
    let moved = format!("wsloop:{}", names[0]);
    let from = cluster.owner(&moved);
    cluster.move_slot(&moved, (from + 1) % 3);
    let start = Instant::now();
    loop {
        let text = format!("after the move {}", start.elapsed().as_millis());
        pubs[0].send_frame(true, 1, text.as_bytes());
        subs[0]
            .1
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        if subs[0].1.stream.peek(&mut buf).is_ok() {
            let f = subs[0].1.read_frame();
            if String::from_utf8_lossy(&f.payload).starts_with("after the move") {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the moved topic never delivered again"
        );
    }
    println!(
        "the moved topic delivers again after {} ms",
        start.elapsed().as_millis()
    );
    for (_, s) in subs.iter_mut() {
        s.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    }
    send_all(&mut pubs, &mut subs, "second");
}

#[test]
fn reuse_port_two_processes_on_one_port_share_a_room() {
    need_redis!();
    let r = Redis::start();
    let first = Daemon::start(&["--redis", &r.url(), "--reuse-port"]);
    let port = first.addr.port().to_string();
    let second = Daemon::start_on(&format!("127.0.0.1:{port}"), &["--redis", &r.url(), "--reuse-port"]);
    assert_eq!(second.addr, first.addr);
    // Connections land on both processes.
    let mut members: Vec<Raw> = (0..40)
        .map(|_| Raw::open_path(first.addr, "/broadcast/shared"))
        .collect();
    let on_first = metric(&first, "wsloop_connections_open");
    let on_second = metric(&second, "wsloop_connections_open");
    println!("{on_first} and {on_second} connections (metrics requests included)");
    assert!(
        on_first > 1 && on_second > 1,
        "the kernel spread them: {on_first}, {on_second}"
    );
    subscribed(&r, "shared", 2);
    // A message from one member reaches all 39 others, whichever process.
    members[0].send_frame(true, 1, b"to everyone");
    for m in &mut members[1..] {
        assert_eq!(m.read_frame().payload, b"to everyone");
    }
}

fn ready(d: &Daemon) -> u16 {
    http(d.addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0
}

#[test]
fn redis_unreachable_at_start_the_nodes_serve_locally_then_join_when_it_comes() {
    need_redis!();
    let mut r = Redis::start();
    r.kill();
    let d = nodes(&r.url(), 2, &[]);
    assert_eq!(ready(&d[0]), 503);
    assert_eq!(ready(&d[1]), 503);
    let mut a1 = member(&d[0], "/broadcast/x");
    let mut a2 = member(&d[0], "/broadcast/x");
    let mut b = member(&d[1], "/broadcast/x");
    relay(&mut a1, &mut a2, "local only");
    nothing_more(&mut b);
    assert!(metric(&d[0], "wsloop_bus_dropped_total") >= 1);
    r.restart();
    let back = Instant::now();
    subscribed(&r, "x", 2);
    let joined = back.elapsed();
    println!("both nodes subscribed {} ms after Redis came", joined.as_millis());
    assert!(joined < Duration::from_secs(2), "{joined:?}");
    relay(&mut a1, &mut b, "across");
    assert_eq!(a2.read_frame().payload, b"across");
    assert_eq!(ready(&d[0]), 200);
    assert_eq!(ready(&d[1]), 200);
}

#[test]
fn sharded_pubsub_follows_a_failover_to_the_promoted_replica() {
    need_redis!();
    let mut cluster = Cluster::start();
    let seeds = cluster.seeds();
    let topic = "failover";
    let shard = cluster.owner(&format!("wsloop:{topic}"));
    let replica = cluster.add_replica(shard);
    let d: Vec<Daemon> = (0..2).map(|_| Daemon::start(&["--redis-cluster", &seeds])).collect();
    let mut sub = member(&d[1], &format!("/broadcast/{topic}"));
    let mut publisher = member(&d[0], &format!("/broadcast/{topic}"));
    // Delivered (retrying: the subscription is made asynchronously), then
    // after the replica takes over the shard, delivered again: the nodes
    // follow the new primary without a restart.
    let mut delivers = |tag: &str| {
        let start = Instant::now();
        sub.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        loop {
            publisher.send_frame(true, 1, tag.as_bytes());
            let mut byte = [0u8; 1];
            if sub.stream.peek(&mut byte).is_ok() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{tag}: never delivered");
        }
        sub.stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
        // Copies of earlier tags (sent while retrying) may come first.
        while sub.read_frame().payload != tag.as_bytes() {}
        start.elapsed()
    };
    delivers("before");
    // The shard's primary crashes; its replica is promoted.
    let crashed = Instant::now();
    cluster.crash_primary_of(replica, shard);
    let promoted = crashed.elapsed();
    let took = delivers("after the failover");
    println!(
        "replica promoted {} ms after the crash; delivering again {} ms later",
        promoted.as_millis(),
        took.as_millis()
    );
    let start = Instant::now();
    while ready(&d[1]) != 200 || ready(&d[0]) != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "never ready again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_password_protected_redis_and_a_wrong_password_said_once_in_the_log() {
    need_redis!();
    let r = Redis::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}", r.port);
    let good = Daemon::start(&["--redis", &url]);
    // The password can also come from the environment (out of `ps`).
    let from_env = common::Daemon::start_with_env(&[("WSLOOP_REDIS_PASSWORD", "s3cret")], &["--redis", &r.url()]);
    let wrong = Daemon::start(&["--redis", &format!("redis://:nope@127.0.0.1:{}", r.port)]);
    let mut a = member(&good, "/broadcast/p");
    let mut b = member(&from_env, "/broadcast/p");
    subscribed(&r, "p", 2);
    relay(&mut a, &mut b, "authenticated");
    // The wrong one serves locally, is not ready, and says why once (it
    // retries every second or so, quietly).
    let line = wrong.wait_log("Redis refused the handshake");
    assert!(line.contains("WRONGPASS"), "{line}");
    assert_eq!(ready(&wrong), 503);
    assert_eq!(ready(&good), 200);
    // Three more attempts (Redis counts the connections, ours that ask
    // included) ...
    let asked = std::cell::Cell::new(0);
    let connections = || -> u64 {
        asked.set(asked.get() + 1);
        let info = r.cmd(&["INFO", "stats"]);
        let line = info
            .lines()
            .find(|l| l.starts_with("total_connections_received:"))
            .unwrap();
        let total: u64 = line.split(':').nth(1).unwrap().trim().parse().unwrap();
        total - asked.get()
    };
    let before = connections();
    let start = Instant::now();
    while connections() < before + 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "no retries");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and still one line in the log.
    assert_eq!(wrong.log_count("Redis refused the handshake"), 1);
}
