//! `/pubsub`: requests of a subscriber connection (subscribe, unsubscribe,
//! publish, in the protocol of [`crate::proto::pubsub`] and
//! docs/pubsub.md), and the batch form of HTTP publish.

use super::topics::{Message, SubError};
use super::{Command, Service};
use crate::config::Config;
use crate::proto::http::HttpError;
use crate::proto::pubsub::{self, ErrorCode, Request, Topics as Names};
use crate::proto::MessageKind;
use serde_json::value::RawValue;

/// A request from `/pubsub` connection `conn`: does it, and answers with
/// an ack (if it had an id) or an error. Nothing a client sends closes the
/// connection or touches its other subscriptions.
pub(super) fn on_message<'s>(
    service: &'s mut Service,
    conn: u32,
    sub_flags: u8,
    kind: MessageKind,
    payload: &[u8],
    config: &Config,
) -> Command<'s> {
    let outcome = match pubsub::parse(kind, payload) {
        Ok(request) => {
            let id = request.id();
            handle(service, conn, sub_flags, request, config)
                .map(|()| id)
                .map_err(|(code, reason)| (code, reason, id))
        }
        Err(e) => Err((e.code, e.reason.into_owned().into(), e.id)),
    };
    let reply = &mut service.reply;
    reply.clear();
    match outcome {
        Ok(None) => return Command::None,
        Ok(Some(id)) => pubsub::write_ack(reply, id),
        Err((code, reason, id)) => {
            service.stats.pubsub_errors += 1;
            pubsub::write_error(reply, id, code, &reason);
        }
    }
    Command::Send(MessageKind::Text, &service.reply)
}

type Refusal = (ErrorCode, std::borrow::Cow<'static, str>);

fn handle(
    service: &mut Service,
    conn: u32,
    sub_flags: u8,
    request: Request<'_>,
    config: &Config,
) -> Result<(), Refusal> {
    let topics = &mut service.topics;
    match request {
        Request::Subscribe { topics: names, .. } => {
            // All or nothing: the new total must fit before any change.
            let new = distinct_new(topics, conn, &names);
            if topics.subscribed(conn).len() + new > config.max_subscriptions {
                return Err((
                    ErrorCode::TooManySubscriptions,
                    format!("at most {} subscriptions per connection", config.max_subscriptions).into(),
                ));
            }
            for name in names.iter() {
                match topics.subscribe(conn, name, sub_flags, config.max_subscriptions) {
                    Ok(_) => {}
                    Err(SubError::TooMany | SubError::NotSubscribed) => {
                        unreachable!("checked before any change")
                    }
                }
            }
            Ok(())
        }
        Request::Unsubscribe { topics: names, .. } => {
            for name in names.iter() {
                let subscribed = topics
                    .find(name)
                    .is_some_and(|id| topics.subscribed(conn).iter().any(|&(t, _)| t == id));
                if !subscribed {
                    return Err((ErrorCode::NotSubscribed, format!("not subscribed to {name:?}").into()));
                }
            }
            for name in names.iter() {
                let _ = topics.unsubscribe(conn, name); // duplicates in a batch: already gone
            }
            Ok(())
        }
        Request::Publish { topic, payload, .. } => {
            if !config.client_publish {
                return Err((
                    ErrorCode::PublishNotAllowed,
                    "this server takes publishes over HTTP only".into(),
                ));
            }
            let message = Message::PubSub(payload);
            if let Some(id) = topics.find(&topic) {
                let n = topics.publish(id, Some(conn), config.broadcast_to_sender, message);
                service.count_publish(n);
            }
            service.send_to_other_nodes(&topic, &message);
            Ok(())
        }
    }
}

/// How many of `names` `conn` is not subscribed to yet (duplicates once).
fn distinct_new(topics: &super::Topics, conn: u32, names: &Names<'_>) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for name in names.iter() {
        let already = topics
            .find(name)
            .is_some_and(|id| topics.subscribed(conn).iter().any(|&(t, _)| t == id));
        if !already && !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen.len()
}

/// `POST /pubsub`: a JSON array of publish requests, each as a `/pubsub`
/// client sends it (`{"type":"publish","topic":...,"data":...}`). All or
/// nothing: every element is checked before any is published. Returns
/// (messages, recipients).
pub(super) fn publish_batch(
    service: &mut Service,
    body: &[u8],
    config: &Config,
) -> Result<(Option<usize>, usize), HttpError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|_| HttpError::bad("the body is not a JSON array of publish requests"))?;
    let mut requests = Vec::with_capacity(elements.len());
    for e in &elements {
        match pubsub::parse_text(e.get().as_bytes()) {
            Ok(Request::Publish { topic, payload, .. }) => requests.push((topic, payload)),
            Ok(_) => return Err(HttpError::bad("only publish requests may be batched")),
            Err(err) => return Err(HttpError::bad(err.code.as_str())),
        }
    }
    let _ = config;
    let mut recipients = 0;
    for (topic, payload) in &requests {
        let message = Message::PubSub(*payload);
        if let Some(id) = service.topics.find(topic) {
            let n = service.topics.publish(id, None, false, message);
            service.count_publish(n);
            recipients += n;
        }
        service.send_to_other_nodes(topic, &message);
    }
    service.stats.http_publishes += requests.len() as u64;
    Ok((Some(requests.len()), recipients))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::topics::flags;

    fn ask(service: &mut Service, conn: u32, json: &str, config: &Config) -> String {
        match on_message(
            service,
            conn,
            flags::ENVELOPE,
            MessageKind::Text,
            json.as_bytes(),
            config,
        ) {
            Command::Send(MessageKind::Text, reply) => String::from_utf8(reply.to_vec()).unwrap(),
            Command::None => String::new(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_ack_or_refuse_and_refusals_change_nothing() {
        let config = Config {
            max_subscriptions: 2,
            ..Config::default()
        };
        let mut s = Service::default();
        let sub = |topics: &str, id: u32| format!(r#"{{"type":"subscribe","topics":{topics},"id":{id}}}"#);
        assert_eq!(
            ask(&mut s, 1, &sub(r#"["a","a"]"#, 1), &config),
            r#"{"type":"ack","id":1}"#
        );
        assert_eq!(s.topics.subscribed(1).len(), 1, "a duplicate in a batch counts once");
        let too_many = ask(&mut s, 1, &sub(r#"["b","c"]"#, 2), &config);
        assert!(too_many.contains(r#""code":"too_many_subscriptions""#), "{too_many}");
        assert_eq!(s.topics.subscribed(1).len(), 1, "all or nothing");
        assert_eq!(
            ask(&mut s, 1, &sub(r#"["b","a"]"#, 3), &config),
            r#"{"type":"ack","id":3}"#
        );
        let not = ask(
            &mut s,
            1,
            r#"{"type":"unsubscribe","topics":["a","zzz"],"id":"x"}"#,
            &config,
        );
        assert!(
            not.starts_with(r#"{"type":"error","id":"x","code":"not_subscribed""#),
            "{not}"
        );
        assert_eq!(s.topics.subscribed(1).len(), 2);
        assert_eq!(
            ask(&mut s, 1, r#"{"type":"unsubscribe","topic":"a"}"#, &config),
            "",
            "no id: no ack"
        );
        let bad = ask(&mut s, 1, r#"{"type":"subscribe","topic":"","id":4}"#, &config);
        assert!(bad.contains(r#""code":"bad_topic""#), "{bad}");
        let garbage = ask(&mut s, 1, "not json", &config);
        assert!(garbage.contains(r#""code":"malformed_json""#), "{garbage}");
        assert_eq!(s.stats.pubsub_errors, 4);
    }

    #[test]
    fn publishing_can_be_refused_to_clients() {
        let config = Config {
            client_publish: false,
            ..Config::default()
        };
        let mut s = Service::default();
        let r = ask(&mut s, 1, r#"{"type":"publish","topic":"t","data":1,"id":9}"#, &config);
        assert!(r.contains(r#""code":"publish_not_allowed""#), "{r}");
    }

    #[test]
    fn batch_publish_is_all_or_nothing() {
        let config = Config::default();
        let mut s = Service::default();
        s.topics.subscribe(1, "a", flags::ENVELOPE, 10).unwrap();
        s.topics.join(2, "b", None, 0).unwrap();
        let ok = br#"[{"type":"publish","topic":"a","data":{"bid":1}},{"type":"publish","topic":"b","data":"x"},{"type":"publish","topic":"c","data":2}]"#;
        assert_eq!(publish_batch(&mut s, ok, &config), Ok((Some(3), 2)));
        let bad = br#"[{"type":"publish","topic":"a","data":1},{"type":"publish","topic":"","data":2}]"#;
        let before = s.topics.batches()[0].frames.len();
        assert_eq!(publish_batch(&mut s, bad, &config).map_err(|e| e.status), Err(400));
        assert_eq!(s.topics.batches()[0].frames.len(), before, "nothing published");
        assert_eq!(publish_batch(&mut s, b"{}", &config).map_err(|e| e.status), Err(400));
    }
}
