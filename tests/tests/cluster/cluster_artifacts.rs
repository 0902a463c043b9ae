//! Components in a cluster go through the JetStream object store
//! `TERN_ARTIFACTS`: the gateway puts a deploy's component there and sends
//! the scheduler its digest, workers read it from there. So a component
//! larger than one NATS message deploys and serves, with the shipped NATS
//! users and permissions; and deleting its function removes it.

use tern_artifacts::{ArtifactStore, JetStreamArtifacts, digest_of};
use tern_tests::{Cluster, ClusterOptions, guest};

/// `wasm` with a custom section of `pad` bytes appended: the same
/// component, as large as asked (custom sections are not run).
fn padded(wasm: &[u8], pad: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"tern-test-padding";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.resize(payload.len() + pad, 0x5a);
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_component_larger_than_a_nats_message_deploys_serves_and_goes_with_its_function() {
    let c = Cluster::start_opts(ClusterOptions { nats_users: true, ..Default::default() });
    // The shipped config allows 16 MiB messages; this is 20 MiB.
    let big = padded(&std::fs::read(guest("hello")).unwrap(), 20 << 20);
    let path = c.dir.path().join("big.wasm");
    std::fs::write(&path, &big).unwrap();
    let out = c.tern_ok(&["deploy", path.to_str().unwrap(), "--name", "big", "--route", "/big"]);
    assert!(out.contains("1 replica ready"), "{out}");
    assert_eq!(c.get("/big?name=large").body, "Hello, large!\n");
    assert_eq!(c.describe("big")["versions"][0]["size"].as_u64(), Some(big.len() as u64));

    let digest = digest_of(&big);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = |digest: &str| {
        rt.block_on(async {
            // As the scheduler's user, with its inbox (the only one it may read).
            let client = async_nats::ConnectOptions::with_user_and_password(
                "scheduler".into(),
                tern_tests::nats_password("scheduler"),
            )
            .custom_inbox_prefix("_TERN.scheduler")
            .connect(c.nats.url())
            .await
            .unwrap();
            let store = JetStreamArtifacts::open(client, 1).await.unwrap();
            store.get(digest).await.unwrap().map(|b| b.len())
        })
    };
    assert_eq!(stored(&digest), Some(big.len()), "kept in TERN_ARTIFACTS");

    c.tern_ok(&["delete", "big"]);
    assert_eq!(stored(&digest), None, "no version uses it any more: removed");
}
