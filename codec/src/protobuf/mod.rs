//! The `ProtoBuf:1` codec (docs/protocol.md §5). Pure: no I/O in this module.
//!
//! * [`messages`]: prost types written by hand from the field tables of docs/protocol.md §5.2 and §5.4.
//! * [`frame`]: little-endian u32 length framing (docs/protocol.md §5.1), including the meaningful empty frame.
//! * [`pdk_table`]: the PDK service table (docs/protocol.md §5.4): wire name → input/output message, and the
//!   conversions between those messages and [`crate::Value`] positional arguments / results, in
//!   both directions (host side "unwrap"/"wrap", server side "encode args"/"decode result").

mod convert;
pub mod frame;
pub mod messages;
pub mod pdk_table;

pub use frame::{encode_frame, encode_message_frame, FrameDecoder, FrameError};
pub use pdk_table::{
    decode_result, encode_args, lookup, methods, unwrap_args, wrap_result, MethodSpec, PbError,
    Shape,
};

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    //! The byte examples of docs/protocol.md §5.5, reproduced with the prost types, the PDK table and the
    //! framing.
    use super::messages::{
        rpc_call::Call, rpc_return::Return, CmdHandleEvent, CmdStartInstance, InstanceStatus,
        RpcCall, RpcReturn,
    };
    use super::*;
    use crate::Value;
    use prost::Message;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn start_instance_call_and_reply() {
        let call = RpcCall {
            sequence: 2,
            call: Some(Call::CmdStartInstance(CmdStartInstance {
                name: "go-hello".into(),
                config: br#"{"message":"Kong!"}"#.to_vec(),
            })),
        };
        let expected = cat(&[
            &[0x24, 0, 0, 0, 0x08, 0x02, 0x8A, 0x02, 0x1F, 0x0A, 0x08],
            b"go-hello",
            &[0x12, 0x13],
            br#"{"message":"Kong!"}"#,
        ]);
        assert_eq!(frame(&call.encode_to_vec()), expected);
        assert_eq!(RpcCall::decode(&expected[4..]).ok(), Some(call));

        let reply = RpcReturn {
            sequence: 2,
            r#return: Some(Return::InstanceStatus(InstanceStatus {
                name: "go-hello".into(),
                instance_id: 5,
                config: None,
                started_at: 1_700_000_000,
            })),
        };
        let expected = cat(&[
            &[0x17, 0, 0, 0, 0x08, 0x02, 0x8A, 0x02, 0x12, 0x0A, 0x08],
            b"go-hello",
            &[0x10, 0x05, 0x20, 0x80, 0xE2, 0xCF, 0xAA, 0x06],
        ]);
        assert_eq!(frame(&reply.encode_to_vec()), expected);
        assert_eq!(RpcReturn::decode(&expected[4..]).ok(), Some(reply));
    }

    #[test]
    fn handle_event_conversation() {
        let event = RpcCall {
            sequence: 3,
            call: Some(Call::CmdHandleEvent(CmdHandleEvent {
                instance_id: 5,
                event_name: "access".into(),
            })),
        };
        let host_call = frame(&event.encode_to_vec());
        assert_eq!(
            host_call,
            cat(&[
                &[0x0F, 0, 0, 0, 0x08, 0x03, 0xA2, 0x02, 0x0A, 0x08, 0x05, 0x12, 0x06],
                b"access"
            ])
        );

        // The server's side of the conversation, built with the server-side codec.
        let get_header = lookup("kong.request.get_header").expect("in table");
        let set_header = lookup("kong.response.set_header").expect("in table");
        let mut server = Vec::new();
        encode_frame(get_header.name.as_bytes(), &mut server);
        encode_frame(
            &encode_args(get_header, &[Value::str("host")]).unwrap(),
            &mut server,
        );
        encode_frame(set_header.name.as_bytes(), &mut server);
        let kv = encode_args(
            set_header,
            &[Value::str("x-hello-from-go"), Value::str("hi")],
        )
        .unwrap();
        encode_frame(&kv, &mut server);
        encode_frame(b"", &mut server);
        encode_frame(
            &RpcReturn {
                sequence: 3,
                r#return: None,
            }
            .encode_to_vec(),
            &mut server,
        );
        let expected = cat(&[
            &[0x17, 0, 0, 0],
            b"kong.request.get_header",
            &[0x06, 0, 0, 0, 0x0A, 0x04],
            b"host",
            &[0x18, 0, 0, 0],
            b"kong.response.set_header",
            &frame(&kv),
            &[0, 0, 0, 0],
            &[0x02, 0, 0, 0, 0x08, 0x03],
        ]);
        assert_eq!(server, expected);

        // The host reads it back frame by frame, in one coalesced read.
        let mut d = FrameDecoder::new(1 << 20);
        d.feed(&server);
        let name = d.next_frame().unwrap().unwrap();
        let spec = lookup(std::str::from_utf8(&name).unwrap()).unwrap();
        let args = unwrap_args(spec, &d.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(args, [Value::str("host")]);
        let reply = wrap_result(spec, &Value::str("example.com")).unwrap();
        assert_eq!(
            frame(&reply),
            cat(&[&[0x0D, 0, 0, 0, 0x0A, 0x0B], b"example.com"])
        );
        assert_eq!(
            decode_result(spec, &reply).unwrap(),
            Value::str("example.com")
        );

        let name = d.next_frame().unwrap().unwrap();
        let spec = lookup(std::str::from_utf8(&name).unwrap()).unwrap();
        let args = unwrap_args(spec, &d.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(args, [Value::str("x-hello-from-go"), Value::str("hi")]);
        // set_header returns nothing useful: the host replies with an empty frame.
        assert_eq!(
            frame(&wrap_result(spec, &Value::Nil).unwrap()),
            [0, 0, 0, 0]
        );

        assert_eq!(d.next_frame().unwrap(), Some(vec![])); // "handler finished"
        let ret = RpcReturn::decode(d.next_frame().unwrap().unwrap().as_slice()).unwrap();
        assert_eq!(ret.sequence, 3);
        assert_eq!(ret.r#return, None);
        assert_eq!(d.next_frame().unwrap(), None);
    }
}
