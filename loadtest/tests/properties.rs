//! Property tests (proptest, 256 cases each) of the load generator's packet decoder: arbitrary
//! server bytes never panic it, and what it encodes it decodes back the same.

use iogate_loadtest::protocol::{SioPacket, decode_eio, decode_sio, event};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[^\u{0}]{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

proptest! {
    #![proptest_config(iogate_testkit::proptest_config())]

    #[test]
    fn decoders_never_panic(s in "(?s).{0,256}") {
        let _ = decode_eio(&s);
        let _ = decode_sio(&s);
    }

    #[test]
    fn an_event_decodes_to_what_was_encoded(
        name in "[^\u{0}]{1,20}",
        args in proptest::collection::vec(json_value(), 0..4),
        ack in proptest::option::of(any::<u64>()),
    ) {
        let wire = event(&name, &args, ack);
        prop_assert_eq!(decode_sio(&wire), Some(SioPacket::Event(name, args, ack)));
    }
}
