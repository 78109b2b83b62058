use super::*;
use crate::config::Dur;
use crate::rollout::analysis::{Criterion, VerdictOutcome};

/// A check written as JSON (the same serde shape as the YAML), compiled.
fn check(json: &str) -> Result<CompiledCheck, CheckError> {
    let m: MetricCheck = serde_json::from_str(json).unwrap();
    CompiledCheck::compile(&m, &Analysis::default())
}

fn vars() -> Vars {
    Vars {
        rollout: "web".into(),
        stable: "v1".into(),
        canary: "v 2".into(),
    }
}

#[test]
fn prometheus_url_is_templated_and_encoded() {
    let c = check(
        r#"{"name":"e","provider":"prometheus","address":"http://127.0.0.1:9090/",
            "query":"sum(x{v=\"{{variant}}\",r=\"{{ rollout }}\"})","condition":"result < 0.5"}"#,
    )
    .unwrap();
    assert_eq!(
        c.url.render(&vars()),
        "http://127.0.0.1:9090/api/v1/query?query=sum%28x%7Bv%3D%22v%202%22%2Cr%3D%22web%22%7D%29"
    );
    assert_eq!(c.interval, Analysis::default().interval.0);
    assert_eq!(c.timeout, Dur::secs(5).0);
}

#[test]
fn prometheus_answers_are_judged_on_every_sample() {
    let c = check(
        r#"{"name":"e","provider":"prometheus","address":"http://p:9090","query":"q","condition":"result < 0.5"}"#,
    )
    .unwrap();
    let vec = |vals: &[&str]| {
        let rows: Vec<_> = vals
            .iter()
            .map(|v| serde_json::json!({"metric": {}, "value": [1.0, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": rows}})
            .to_string()
    };
    assert_eq!(
        c.judge(vec(&["0.25"]).as_bytes()).unwrap(),
        (Value::from(0.25), true)
    );
    assert!(!c.judge(vec(&["0.25", "0.75"]).as_bytes()).unwrap().1);
    assert!(
        c.judge(vec(&[]).as_bytes())
            .unwrap_err()
            .contains("no series")
    );
    assert!(
        c.judge(vec(&["NaN"]).as_bytes())
            .unwrap_err()
            .contains("NaN")
    );
    let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.7"]}}"#;
    assert!(!c.judge(scalar.as_bytes()).unwrap().1);
    let err = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
    assert!(c.judge(err.as_bytes()).unwrap_err().contains("parse error"));
    assert!(c.judge(b"<html>").unwrap_err().contains("not JSON"));
}

#[test]
fn web_values_by_json_path() {
    let c = check(
        r#"{"name":"s","provider":"web","url":"http://t/ok?r={{rollout}}","json_path":"$.checks[1]['ok flag']","condition":"result == true"}"#,
    )
    .unwrap();
    assert_eq!(c.url.render(&vars()), "http://t/ok?r=web");
    let body = br#"{"checks":[{},{"ok flag":true}]}"#;
    assert_eq!(c.judge(body).unwrap(), (Value::Bool(true), true));
    assert!(!c.judge(br#"{"checks":[{},{"ok flag":false}]}"#).unwrap().1);
    assert!(
        c.judge(br#"{"checks":[]}"#)
            .unwrap_err()
            .contains("finds nothing")
    );
    assert!(c.judge(br#"{"checks":[{},{"ok flag":1}]}"#).is_err());
    let n = check(
        r#"{"name":"s","provider":"web","url":"http://t/","json_path":"$.p99","condition":"result <= 300"}"#,
    )
    .unwrap();
    assert!(n.judge(br#"{"p99":"299.5"}"#).unwrap().1);
    assert!(!n.judge(br#"{"p99":301}"#).unwrap().1);
}

#[test]
fn conditions_parse_and_compare() {
    let holds = |c: &str, x: f64| Condition::parse(c).unwrap().holds_num(x);
    assert!(holds("result < 1", 0.5));
    assert!(!holds("result<1", 1.0));
    assert!(holds("result <= 1", 1.0));
    assert!(holds("result >= 1e3", 1000.0));
    assert!(holds("result != 2", 3.0));
    assert!(holds("result == true", 1.0));
    assert!(holds("result != true", 0.0));
    for bad in [
        "x < 1",
        "result ~ 1",
        "result < abc",
        "result < true",
        "result <",
        "result < NaN",
    ] {
        assert!(Condition::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_checks_name_their_field() {
    let field = |s: &str| check(s).unwrap_err().0;
    assert_eq!(
        field(r#"{"name":"a","provider":"prometheus","query":"q","condition":"result < 1"}"#),
        "address"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"prometheus","address":"ftp://p","query":"q","condition":"result < 1"}"#
        ),
        "address"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"prometheus","address":"http://p","ca_file":"ca.pem","query":"q","condition":"result < 1"}"#
        ),
        "ca_file"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"web","url":"https://p","ca_file":"","condition":"result < 1"}"#
        ),
        "ca_file"
    );
    check(
        r#"{"name":"a","provider":"prometheus","address":"https://p","ca_file":"ca.pem","query":"q","condition":"result < 1"}"#,
    )
    .unwrap();
    assert_eq!(
        field(
            r#"{"name":"a","provider":"prometheus","address":"http://p","query":"{{nope}}","condition":"result < 1"}"#
        ),
        "query"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"web","url":"http://p","json_path":"a.b","condition":"result < 1"}"#
        ),
        "json_path"
    );
    assert_eq!(
        field(r#"{"name":"a","provider":"web","url":"http://p","condition":"result is 1"}"#),
        "condition"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"web","url":"http://p","condition":"result < 1","failure_limit":0}"#
        ),
        "failure_limit"
    );
    assert_eq!(
        field(
            r#"{"name":"a","provider":"web","url":"http://p","query":"q","condition":"result < 1"}"#
        ),
        "provider"
    );
}

fn result(state: MetricState, failures: u32, limit: u32) -> MetricResult {
    MetricResult {
        name: "m".into(),
        state,
        value: None,
        error: None,
        consecutive_failures: failures,
        failure_limit: limit,
    }
}

fn verdict(outcome: VerdictOutcome) -> Verdict {
    let mut v = crate::rollout::analysis::judge(
        &Analysis::default(),
        &Default::default(),
        &Default::default(),
    );
    v.outcome = outcome;
    v.rule = (outcome == VerdictOutcome::Failed).then_some(Criterion::ErrorRate);
    v
}

#[test]
fn results_fold_into_the_verdict() {
    let fold = |outcome, r: MetricResult| {
        let mut v = verdict(outcome);
        combine(&mut v, vec![r]);
        (v.outcome, v.rule)
    };
    use MetricState::*;
    // At the limit, a failing check fails the verdict, even on too little proxy traffic.
    assert_eq!(
        fold(VerdictOutcome::Passed, result(Failed, 2, 2)),
        (VerdictOutcome::Failed, Some(Criterion::Metric))
    );
    assert_eq!(
        fold(VerdictOutcome::Inconclusive, result(Failed, 1, 1)),
        (VerdictOutcome::Failed, Some(Criterion::Metric))
    );
    // Below the limit, or a provider error, or nothing yet: hold, never fail.
    assert_eq!(
        fold(VerdictOutcome::Passed, result(Failed, 1, 2)).0,
        VerdictOutcome::Inconclusive
    );
    assert_eq!(
        fold(VerdictOutcome::Passed, result(Error, 0, 1)).0,
        VerdictOutcome::Inconclusive
    );
    assert_eq!(
        fold(VerdictOutcome::Passed, result(Pending, 0, 1)).0,
        VerdictOutcome::Inconclusive
    );
    assert_eq!(
        fold(VerdictOutcome::Passed, result(Passed, 0, 1)).0,
        VerdictOutcome::Passed
    );
    // A built-in failure keeps its own rule.
    assert_eq!(
        fold(VerdictOutcome::Failed, result(Error, 0, 1)),
        (VerdictOutcome::Failed, Some(Criterion::ErrorRate))
    );
}
