//! The reader against crafted pickles: refusals, limits, budgets.

use super::*;
use crate::error::Status;

/// A protocol-2 pickle of `body` followed by STOP.
fn pickle(body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x80, 2];
    bytes.extend_from_slice(body);
    bytes.push(b'.');
    bytes
}

fn refused(bytes: &[u8]) -> String {
    let error = read(bytes).expect_err("must be refused");
    assert_eq!(error.status(), Status::ModelInvalid);
    error.message().to_owned()
}

#[test]
fn os_system_is_refused_at_the_global() {
    // cos\nsystem\n(S'echo pwned'\ntR. — what `pickle.dumps` of a malicious __reduce__ gives.
    let message = refused(b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwnedtR.");
    assert!(message.contains("refused global os.system"), "{message}");
}

#[test]
fn builtins_eval_and_other_globals_are_refused() {
    for (module, name) in [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("__builtin__", "getattr"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_from_type_v2"),
        ("collections", "defaultdict"),
        ("torch.nn.modules.linear", "Linear"),
    ] {
        let body = format!("c{module}\n{name}\n)R");
        let message = refused(&pickle(body.as_bytes()));
        assert!(
            message.contains(&format!("refused global {module}.{name}")),
            "{message}"
        );
    }
}

#[test]
fn stack_global_is_checked_against_the_same_whitelist() {
    let message = refused(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94)R.");
    assert!(
        message.contains("refused global builtins.eval"),
        "{message}"
    );
}

#[test]
fn object_building_opcodes_are_refused() {
    for op in [b'i', b'o', 0x81, 0x92, b'P'] {
        let message = refused(&pickle(&[op]));
        assert!(message.contains("refused"), "{message}");
    }
}

#[test]
fn reduce_of_a_non_global_is_refused() {
    let message = refused(&pickle(b"})R"));
    assert!(message.contains("REDUCE on a dict"), "{message}");
}

#[test]
fn storage_class_cannot_be_called() {
    let message = refused(&pickle(b"ctorch\nFloatStorage\n)R"));
    assert!(
        message.contains("only valid inside a persistent id"),
        "{message}"
    );
}

/// `_rebuild_tensor_v2(storage(numel), 0, size, stride, False, OrderedDict())`.
fn tensor_pickle(numel: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut body = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    body.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK",
    );
    body.push(numel);
    body.extend_from_slice(b"tQK\x00(");
    for s in size {
        body.extend_from_slice(&[b'K', *s]);
    }
    body.extend_from_slice(b"t(");
    for s in stride {
        body.extend_from_slice(&[b'K', *s]);
    }
    body.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
    pickle(&body)
}

#[test]
fn tensor_inside_its_storage_is_read() {
    let p = read(&tensor_pickle(6, &[2, 3], &[3, 1])).unwrap();
    let Value::Tensor(t) = p.get(p.root) else {
        panic!("not a tensor: {:?}", p.get(p.root))
    };
    assert_eq!((t.shape.as_slice(), t.numel()), (&[2, 3][..], 6));
    assert_eq!(t.storage.key, "0");
}

#[test]
fn tensor_larger_than_its_storage_is_refused() {
    let message = refused(&tensor_pickle(5, &[2, 3], &[3, 1]));
    assert!(message.contains("storage \"0\" holds 5"), "{message}");
    // As many elements as the storage, but strided past its end.
    let message = refused(&tensor_pickle(6, &[2, 3], &[4, 1]));
    assert!(message.contains("reach element 6"), "{message}");
}

#[test]
fn truncated_and_empty_pickles_are_refused() {
    refused(b"");
    refused(b"\x80\x02");
    refused(b"\x80\x02X\xff\xff\xff\x7fabc");
    refused(&pickle(b""));
}

#[test]
fn memo_shares_instead_of_copying() {
    // A list appended to itself twice per level, 40 levels: 2^40 leaves if copied.
    let mut body = b"]q\x00".to_vec();
    for _ in 0..40 {
        body.extend_from_slice(b"](h\x00h\x00eq\x00");
    }
    let p = read(&pickle(&body)).unwrap();
    assert!(p.values.len() < 100);
}

#[test]
fn stack_and_mark_limits_hold() {
    let body = vec![b'N'; MAX_STACK + 1];
    assert!(refused(&pickle(&body)).contains("stack deeper"));
    let body = vec![b'('; MAX_STACK + 1];
    assert!(refused(&pickle(&body)).contains("open MARKs"));
}

#[test]
fn value_limit_holds() {
    // MAX_VALUES Nones, popped as they come so the stack stays shallow.
    let body = b"N0".repeat(MAX_VALUES + 1);
    assert!(refused(&pickle(&body)).contains("more than"));
}

#[test]
fn ordered_dict_keeps_order_and_replaces_repeated_keys() {
    let body = b"ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00bK\x01X\x01\x00\x00\x00aK\x02X\x01\x00\x00\x00bK\x03u";
    let p = read(&pickle(body)).unwrap();
    let Value::Dict(entries) = p.get(p.root) else {
        panic!()
    };
    let flat: Vec<(&str, &Value)> = entries
        .iter()
        .map(|(k, v)| (p.str(*k).unwrap(), p.get(*v)))
        .collect();
    assert_eq!(flat, [("b", &Value::Int(3)), ("a", &Value::Int(2))]);
}

#[test]
fn a_large_dict_is_read_in_linear_time() {
    // 300k distinct int keys in one dict: quadratic key lookup would take minutes.
    // Batches of 1000, as pickle writes them.
    let mut body = b"}".to_vec();
    for batch in 0..300i32 {
        body.push(b'(');
        for i in batch * 1000..(batch + 1) * 1000 {
            body.push(b'J');
            body.extend_from_slice(&i.to_le_bytes());
            body.push(b'N');
        }
        body.push(b'u');
    }
    let started = std::time::Instant::now();
    let p = read(&pickle(&body)).unwrap();
    let Value::Dict(entries) = p.get(p.root) else {
        panic!()
    };
    assert_eq!(entries.len(), 300_000);
    // Generous: linear work is a few hundred milliseconds even unoptimized.
    assert!(started.elapsed().as_secs() < 20);
}

#[test]
fn an_ordered_dict_rebuilt_from_one_shared_list_runs_out_of_budget() {
    // One list of 100 pairs, memoised; OrderedDict(list) 2,500 times: 250,000 entries from
    // 16 KB, more than one item a byte plus the base allows.
    let mut body = b"ccollections\nOrderedDict\nq\x04](".to_vec();
    for i in 0..100u8 {
        body.extend_from_slice(&[0x8c, 1, i, b'N', 0x86]);
    }
    body.extend_from_slice(b"e\x85q\x05(");
    let prefix = body.len();
    for _ in 0..2500 {
        body.extend_from_slice(b"h\x04h\x05R0");
    }
    body.push(b't');
    let message = refused(&pickle(&body));
    assert!(message.contains("container items"), "{message}");
    // A dozen rebuilds fit.
    let mut few = body[..prefix + 12 * 6].to_vec();
    few.push(b't');
    assert!(read(&pickle(&few)).is_ok());
}

#[test]
fn one_key_set_many_times_keeps_one_entry() {
    let mut body = b"}q\x02X\x00\x08\x00\x00".to_vec();
    body.extend_from_slice(&[b'k'; 2048]);
    body.extend_from_slice(b"q\x030");
    for _ in 0..3000 {
        body.extend_from_slice(b"h\x03Ns");
    }
    let p = read(&pickle(&body)).unwrap();
    let Value::Dict(entries) = p.get(p.root) else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
}

#[test]
fn long1_reads_signed_64_bit_and_refuses_wider() {
    let p = read(&pickle(b"\x8a\x02\xff\x7f")).unwrap();
    assert_eq!(p.get(p.root), &Value::Int(0x7fff));
    let p = read(&pickle(b"\x8a\x01\xff")).unwrap();
    assert_eq!(p.get(p.root), &Value::Int(-1));
    assert!(refused(&pickle(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01")).contains("64-bit"));
}
