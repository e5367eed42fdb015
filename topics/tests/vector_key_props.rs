//! The identity of a vector (`hektor_topics::record::vector_key`): injective over every
//! (tenant, id) pair, a superset of what validation accepts (ids and tenants of any UTF-8,
//! control characters and NUL included), and the id-only key is the id's bytes.

use hektor_topics::record::{split_vector_key, vector_key, VectorRecord, VectorUpsert};
use proptest::prelude::*;

/// Any Unicode string, short, with the separators a naive key would trip on.
fn text() -> impl Strategy<Value = String> {
    let char = prop_oneof![
        any::<char>(),
        Just('\0'),
        Just('/'),
        Just(':'),
        Just('\u{ff}'),
        Just('ÿ'),
        Just('a'),
    ];
    prop::collection::vec(char, 0..8).prop_map(String::from_iter)
}

fn tenant() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Distinct pairs have distinct keys, and the key splits back into its pair.
    #[test]
    fn key_is_injective(a in (tenant(), text()), b in (tenant(), text())) {
        let ka = vector_key(a.0.as_deref(), &a.1);
        let kb = vector_key(b.0.as_deref(), &b.1);
        prop_assert_eq!(ka == kb, a == b, "{:?} {:?}", a, b);
        prop_assert_eq!(split_vector_key(&ka), Some((a.0.as_deref(), a.1.as_str())));
    }

    /// Same id, tenant in one pair and not in the other (the case of the bug: keys by id
    /// alone) never collide, even when the tenant is empty.
    #[test]
    fn tenant_or_not_never_collide(tenant in text(), id in text()) {
        prop_assert_ne!(vector_key(Some(&tenant), &id), vector_key(None, &id));
    }
}

#[test]
fn id_only_keys_are_the_id_and_tenant_keys_are_marked() {
    assert_eq!(vector_key(None, "doc-1"), b"doc-1");
    assert_eq!(vector_key(Some("t1"), "doc-1"), b"\xfft1\xffdoc-1");
    assert_ne!(vector_key(Some("a"), "x"), vector_key(Some("b"), "x"));
    // No shifting of bytes between tenant and id.
    assert_ne!(vector_key(Some("ab"), "c"), vector_key(Some("a"), "bc"));
    let record = VectorRecord::Upsert(VectorUpsert {
        collection: "c".into(),
        id: "x".into(),
        tenant: Some("a".into()),
        vector: vec![1.0],
        payload: None,
        hlc: Default::default(),
        origin: String::new(),
    });
    assert_eq!(record.key(), vector_key(Some("a"), "x"));
    assert_eq!(split_vector_key(b"\xffonly-a-tenant"), None);
    assert_eq!(split_vector_key(b"\xfe"), None);
}
