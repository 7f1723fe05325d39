//! Unit tests of the analytics service: the login cache, node lists and
//! replayed credential changes.

use super::*;

#[test]
fn login_cache_forgets_on_change_and_ignores_older_checks() {
    let cache = LoginCache::default();
    let view = LoginView {
        cache_id: "c".into(),
        username: "u".into(),
        primary: true,
        write: true,
        flush: true,
        api: true,
        disabled: false,
    };
    let key = LoginCache::key("u", "p");
    assert_ne!(key, LoginCache::key("u", "q"));
    let generation = cache.get(&key).unwrap_err();
    cache.put(key, view.clone(), generation);
    assert_eq!(cache.get(&key).unwrap().username, "u");
    cache.clear();
    assert!(cache.get(&key).is_err());
    // Checked before the change, finished after it: not remembered.
    cache.put(key, view, generation);
    assert!(cache.get(&key).is_err());
}

#[test]
fn node_lists() {
    let n = parse_nodes("a:1, n2=10.0.0.2:9000").unwrap();
    assert_eq!(n[0].label, "a:1");
    assert_eq!(
        (n[1].label.as_str(), n[1].addr.as_str()),
        ("n2", "10.0.0.2:9000")
    );
    for bad in ["", "a", "a:x", "=a:1", "a:1,a:1", ":1"] {
        assert!(parse_nodes(bad).is_err(), "{bad}");
    }
}

fn view(name: &str, primary: bool) -> CredentialView {
    CredentialView {
        username: name.into(),
        primary,
        write: true,
        flush: true,
        api: true,
    }
}

#[test]
fn changes_apply_idempotently() {
    let current = vec![view("a", true), view("b", false)];
    let promote = Change::Promote {
        cache_id: "c".into(),
        username: "b".into(),
    };
    let once = promote.apply(&current).unwrap();
    assert!(!once[0].primary && once[1].primary);
    // Deleting the primary is a no-op; deleting twice is too.
    let delete_a = Change::Delete {
        cache_id: "c".into(),
        username: "a".into(),
    };
    assert_eq!(delete_a.apply(&current).unwrap().len(), 2);
    let delete_b = Change::Delete {
        cache_id: "c".into(),
        username: "b".into(),
    };
    assert_eq!(delete_b.apply(&current).unwrap().len(), 1);
    assert_eq!(delete_b.apply(&[view("a", true)]).unwrap().len(), 1);
    let create = Change::Create {
        cache_id: "c".into(),
        username: "n".into(),
        password_hash: "$argon2id$x".into(),
        write: true,
        flush: false,
        api: false,
    };
    let after = create.apply(&current).unwrap();
    assert_eq!(after.len(), 3);
    assert!(!after[2].primary && !after[2].flush);
    // Replayed on a node that already has it: still one of it.
    assert_eq!(
        create
            .apply(&[view("a", true), view("n", false)])
            .unwrap()
            .len(),
        2
    );
}
