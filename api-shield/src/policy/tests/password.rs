//! Basic passwords through the engine's two-step decision: the hash handed out instead of
//! computed, the success cache, the failure budget refusing before any hash, and reloads.

use std::time::Duration;

use super::engine::{CLIENT, basic, engine_with, get, policy_toml};
use super::now;
use crate::policy::{
    DenyReason, Engine, PasswordOutcome, PolicyConfig, RequestMeta, Step, Verdict,
    basic::tests::argon2id_hash,
};

const ANN: &str = "ann's passphrase";

fn ann(pass: &str) -> RequestMeta {
    get("/v1/orders").header("Authorization", &basic("ann", pass))
}

fn from(ip: &str, pass: &str) -> RequestMeta {
    let mut r = ann(pass);
    r.client_ip = ip.parse().unwrap();
    r
}

/// `begin`, then the hash if one is handed out: the decision and whether a hash was needed.
fn two_step(e: &Engine, req: &RequestMeta) -> (crate::policy::AccessDecision, bool) {
    match e.begin(req, now()) {
        Step::Decided(d) => (d, false),
        Step::Password(check) => (e.finish(req, check.run(), now()), true),
    }
}

#[test]
fn a_password_is_handed_out_to_hash_then_remembered() {
    let e = engine_with(|_| {});
    let (d, hashed) = two_step(&e, &ann(ANN));
    assert!(hashed, "the first check needs a hash");
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.password, Some(PasswordOutcome::Verified));
    assert_eq!(d.route.as_deref(), Some("orders"));
    let (d, hashed) = two_step(&e, &ann(ANN));
    assert!(!hashed, "a remembered success is decided on the spot");
    assert_eq!(d.password, Some(PasswordOutcome::Cached));
    assert_eq!(d.identity.unwrap().id, "ann");
    // A wrong password is never remembered: each one is handed out again.
    for _ in 0..2 {
        let (d, hashed) = two_step(&e, &ann("guess"));
        assert!(hashed);
        assert_eq!(d.status(), 401);
        assert_eq!(d.password, Some(PasswordOutcome::Rejected));
    }
    // The 503 a transport gives when it has no room names the route and says when to retry.
    let Step::Password(check) = e.begin(&ann("another guess"), now()) else {
        panic!("a wrong password needs a hash");
    };
    let d = check.unavailable(Duration::from_secs(1));
    assert_eq!(d.status(), 503);
    assert_eq!(d.response_header("retry-after"), Some("1"));
    assert_eq!(d.route.as_deref(), Some("orders"));
    assert_eq!(d.reason, Some(DenyReason::PasswordCheckUnavailable));
}

#[test]
fn a_verdict_for_another_credential_is_a_wrong_password() {
    let e = engine_with(|_| {});
    let Step::Password(check) = e.begin(&ann("guess"), now()) else {
        panic!("hash expected");
    };
    let d = e.finish(&ann(ANN), check.run(), now());
    assert_eq!(d.status(), 401, "{d:?}");
    let Step::Password(check) = e.begin(&ann(ANN), now()) else {
        panic!("hash expected");
    };
    // Right password, but the verdict is replayed for a guess.
    let d = e.finish(&ann("guess"), check.run(), now());
    assert_eq!(d.status(), 401, "{d:?}");
}

#[test]
fn a_source_out_of_failure_budget_is_refused_before_hashing() {
    let e = engine_with(|c| {
        c.password_budget.failures = 3;
        c.password_budget.per = Duration::from_secs(60);
        // Escalation is not what this test is about.
        c.detector.auth_failures.count = 1000;
    });
    let attacker = "198.18.5.5";
    // A good client from the same source logs in before the guessing starts.
    let (d, _) = two_step(&e, &from(attacker, ANN));
    assert!(d.is_allowed());
    for i in 0..3 {
        let (d, hashed) = two_step(&e, &from(attacker, &format!("guess {i}")));
        assert!(hashed && d.status() == 401, "guess {i}: {d:?}");
    }
    // Spent: the next guess is refused without a hash being handed out.
    match e.begin(&from(attacker, "guess 4"), now()) {
        Step::Decided(d) => {
            assert_eq!(d.status(), 429, "{d:?}");
            assert_eq!(d.reason, Some(DenyReason::PasswordBudgetSpent));
            assert_eq!(d.password, Some(PasswordOutcome::BudgetSpent));
            // One failure refills every 20 s.
            assert_eq!(d.response_header("retry-after"), Some("20"));
            assert!(matches!(
                d.verdict,
                Verdict::Deny {
                    status: 429,
                    retry_after: Some(20),
                    ..
                }
            ));
        }
        Step::Password(_) => panic!("a spent source got a hash"),
    }
    // So is an unknown user (which would cost a decoy hash).
    let mut carol = get("/v1/orders").header("Authorization", &basic("carol", "x"));
    carol.client_ip = attacker.parse().unwrap();
    assert!(matches!(e.begin(&carol, now()), Step::Decided(d) if d.status() == 429));
    // The success remembered before the guessing still serves, without a hash.
    let (d, hashed) = two_step(&e, &from(attacker, ANN));
    assert!(d.is_allowed() && !hashed, "{d:?}");
    // Other sources are untouched, and the budget refills.
    let (d, hashed) = two_step(&e, &from(CLIENT, "guess"));
    assert!(hashed && d.status() == 401);
    let later = now().after(Duration::from_secs(21));
    assert!(matches!(
        e.begin(&from(attacker, "guess 5"), later),
        Step::Password(_)
    ));
}

#[test]
fn a_password_changed_by_a_reload_no_longer_matches_its_remembered_success() {
    let e = engine_with(|_| {});
    assert!(e.check(&ann(ANN), now()).is_allowed());
    assert!(matches!(e.begin(&ann(ANN), now()), Step::Decided(_)));
    let mut cfg = PolicyConfig::from_toml_str(&policy_toml()).unwrap();
    cfg.basic_users[0].password_hash = argon2id_hash("ann's new passphrase");
    let reloaded = e.reload(cfg.clone()).unwrap();
    assert!(
        matches!(reloaded.begin(&ann(ANN), now()), Step::Password(_)),
        "the old success must not be served for the new hash"
    );
    assert_eq!(reloaded.check(&ann(ANN), now()).status(), 401);
    assert!(
        reloaded
            .check(&ann("ann's new passphrase"), now())
            .is_allowed()
    );
    // A reload that changes nothing about ann keeps her success: no hash after it.
    let again = reloaded.reload(cfg).unwrap();
    assert!(matches!(
        again.begin(&ann("ann's new passphrase"), now()),
        Step::Decided(d) if d.password == Some(PasswordOutcome::Cached)
    ));
}
