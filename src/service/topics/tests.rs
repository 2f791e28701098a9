use super::*;

fn text(b: &[u8]) -> Message<'_> {
    Message::Bare(MessageKind::Text, b)
}

/// The frames of batch `b` in the form of a subscriber with flags `form`:
/// (opcode, payload) pairs.
fn frames(b: &Batch, form: u8) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..b.frames.len() {
        let (s, e) = b.frame_range(i, form);
        if s == e {
            continue;
        }
        let bytes = &b.buffer(form)[s..e];
        let Ok(frame::Decoded::Complete(h, n)) = frame::decode(bytes) else {
            panic!("a frame")
        };
        assert_eq!(n + h.len as usize, bytes.len(), "one whole frame");
        out.push((h.opcode, bytes[n..].to_vec()));
    }
    out
}

#[test]
fn topics_come_and_go_with_their_subscribers() {
    let mut t = Topics::default();
    let a = t.subscribe(1, "a", 0, 10).unwrap();
    assert_eq!(t.subscribe(1, "a", 0, 10), Ok(a), "again: a no-op");
    assert_eq!(t.subscribe(2, "a", 0, 10), Ok(a));
    let b = t.subscribe(1, "b", flags::ENVELOPE, 10).unwrap();
    assert_ne!(a, b);
    assert_eq!((t.len(), t.subscriptions()), (2, 3));
    assert_eq!(t.unsubscribe(3, "a"), Err(SubError::NotSubscribed));
    assert_eq!(t.unsubscribe(1, "nope"), Err(SubError::NotSubscribed));
    assert_eq!(t.unsubscribe(1, "a"), Ok(a));
    assert_eq!(t.unsubscribe(1, "a"), Err(SubError::NotSubscribed));
    assert_eq!(t.get(a).unwrap().subs().len(), 1);
    t.unsubscribe_all(2);
    assert!(t.find("a").is_none(), "the last subscriber took the topic with it");
    t.unsubscribe_all(1);
    assert_eq!((t.len(), t.subscriptions()), (0, 0));
}

#[test]
fn the_subscription_limit_is_per_connection() {
    let mut t = Topics::default();
    for i in 0..3 {
        t.subscribe(1, &format!("t{i}"), 0, 3).unwrap();
    }
    assert_eq!(t.subscribe(1, "t3", 0, 3), Err(SubError::TooMany));
    assert_eq!(
        t.subscribe(1, "t0", 0, 3).map(|_| ()),
        Ok(()),
        "already subscribed: fine"
    );
    assert!(t.subscribe(2, "t3", 0, 3).is_ok());
}

/// Back-pointers stay right through any order of removals: a model check.
#[test]
fn back_pointers_survive_random_churn() {
    let mut t = Topics::default();
    let mut model: std::collections::BTreeSet<(u32, u32)> = Default::default();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (conn, topic) = ((x % 16) as u32, ((x >> 8) % 12) as u32);
        let name = format!("t{topic}");
        if x >> 40 & 1 == 0 {
            if t.subscribe(conn, &name, 0, 8).is_ok() {
                model.insert((conn, topic));
            }
        } else if (x >> 41) % 17 == 0 {
            t.unsubscribe_all(conn);
            model.retain(|&(c, _)| c != conn);
        } else {
            assert_eq!(t.unsubscribe(conn, &name).is_ok(), model.remove(&(conn, topic)));
        }
        // Every subscription is in both lists, pointing at each other.
        for (&c, list) in &t.lists {
            for (j, &(id, i)) in list.iter().enumerate() {
                let sub = t.topics[id as usize].subs[i as usize];
                assert_eq!((sub.conn, sub.back as usize), (c, j));
            }
        }
        assert_eq!(t.subscriptions(), model.len());
    }
}

#[test]
fn a_message_is_encoded_once_per_form_that_is_wanted() {
    let mut t = Topics::default();
    let room = t.join(1, "r", None, 0).unwrap();
    t.subscribe(2, "r", flags::ENVELOPE, 10).unwrap();
    assert_eq!(t.publish(room, Some(1), false, text(b"{\"a\":1}")), 1);
    assert_eq!(t.publish(room, None, false, text(b"hello")), 2);
    assert_eq!(
        t.publish(room, None, false, Message::Bare(MessageKind::Binary, b"\x00\xff")),
        2
    );
    let b = &t.batches()[0];
    assert_eq!(
        frames(b, 0),
        [
            (1, b"{\"a\":1}".to_vec()),
            (1, b"hello".to_vec()),
            (2, b"\x00\xff".to_vec())
        ]
    );
    assert_eq!(
        frames(b, flags::ENVELOPE),
        [
            (1, br#"{"type":"message","topic":"r","data":{"a":1}}"#.to_vec()),
            (1, br#"{"type":"message","topic":"r","data":"hello"}"#.to_vec()),
            (2, b"\x81\x01r\x00\xff".to_vec()),
        ]
    );
    assert_eq!(b.frames[0].sender, Some(1));
    // Nobody wants envelopes: none are made.
    t.end_iteration(1 << 20);
    t.unsubscribe(2, "r").unwrap();
    t.publish(room, None, false, text(b"x"));
    assert!(t.batches()[0].bufs[1].is_empty());
}

#[test]
fn pubsub_publishes_reach_room_members_bare() {
    let mut t = Topics::default();
    let room = t.join(1, "r", None, 0).unwrap();
    let Ok(pubsub::Request::Publish { payload, .. }) =
        pubsub::parse_text(br#"{"type":"publish","topic":"r","data":"hi \"you\""}"#)
    else {
        panic!()
    };
    t.publish(room, Some(9), false, Message::PubSub(payload));
    assert_eq!(frames(&t.batches()[0], 0), [(1, b"hi \"you\"".to_vec())]);
}

#[test]
fn presence_notices_for_those_who_asked_and_on_leaving() {
    let mut t = Topics::default();
    let r = t.join(1, "r", None, 0).unwrap();
    t.join(2, "r", None, 0).unwrap();
    assert!(t.batches().is_empty(), "nobody asked: no notices");
    t.join(3, "r", Some("Zoë \"z\""), 0).unwrap();
    t.unsubscribe_all(1);
    t.unsubscribe_all(3);
    let b = &t.batches()[0];
    assert_eq!(b.topic, r);
    assert!(b.frames.iter().all(|f| f.presence && f.sender.is_none()));
    // Zoë's join, then 1's leaving (it gave no name); Zoë's own leaving is
    // announced to nobody: nobody left asked.
    assert_eq!(
        frames(b, 0),
        [
            (
                1,
                r#"{"type":"presence","event":"join","name":"Zoë \"z\"","members":3}"#
                    .as_bytes()
                    .to_vec()
            ),
            (
                1,
                br#"{"type":"presence","event":"leave","name":null,"members":2}"#.to_vec()
            ),
        ]
    );
}

#[test]
fn a_topic_emptied_while_dirty_goes_after_delivery() {
    let mut t = Topics::default();
    let id = t.subscribe(1, "a", 0, 10).unwrap();
    t.publish(id, None, false, text(b"x"));
    t.unsubscribe_all(1);
    assert_eq!(t.batches().len(), 1, "its batch survives until delivery");
    t.end_iteration(1 << 20);
    assert!(t.find("a").is_none() && t.len() == 0);
}

#[test]
fn room_names() {
    assert_eq!(room_name("/broadcast"), Some(Ok("default".into())));
    assert_eq!(room_name("/broadcast/lobby"), Some(Ok("lobby".into())));
    assert_eq!(
        room_name("/broadcast/caf%C3%A9%20au%20lait"),
        Some(Ok("café au lait".into()))
    );
    assert!(matches!(room_name("/broadcast/"), Some(Err(_))));
    assert_eq!(room_name("/broadcast/%FF"), Some(Err("room name is not UTF-8")));
    assert!(
        matches!(room_name("/broadcast/a%0Ab"), Some(Err(_))),
        "control characters"
    );
    assert_eq!(
        room_name(&format!("/broadcast/{}", "a".repeat(128))),
        Some(Ok("a".repeat(128)))
    );
    assert!(matches!(
        room_name(&format!("/broadcast/{}", "a".repeat(129))),
        Some(Err(_))
    ));
    assert_eq!(room_name("/broadcasting"), None);
    assert_eq!(room_name("/echo"), None);
}

#[test]
fn records_are_small() {
    // The one-topic-per-user pattern: a topic with one subscriber holds it
    // inline, and a topic record stays under 64 bytes.
    assert!(std::mem::size_of::<Topic>() <= 56, "{}", std::mem::size_of::<Topic>());
    assert_eq!(std::mem::size_of::<Sub>(), 8);
}
