//! A scan run as one JSON document: what a scanner node sends the server for
//! the part of a scan job it scanned, and what `scans merge --server` reads
//! back (issue 11). The same fields as the history database's columns, spelled
//! the same way (times in RFC 3339, enums by the names perimeter prints, the
//! seed as a decimal string: JSON numbers lose bits above 2^53).
//!
//! The document comes from the network: [`decode_run`] bounds it (results,
//! findings and strings per field) and checks every value, so a hostile or
//! damaged one is an error naming what was wrong, never a panic.

use std::collections::BTreeMap;
use std::net::IpAddr;

use perimeter_model::{Finding, PortResult, ScanInfo, ServiceInfo, TlsInfo};
use serde::{Deserialize, Serialize};

use crate::codec::{
    decode_auth, decode_port_state, decode_protocol, decode_severity, decode_time, encode_time,
};
use crate::error::StoreError;

/// The schema of the document.
pub const RUN_SCHEMA: &str = "perimeter.scan-run/1";

/// Bounds on a document from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub max_results: usize,
    pub max_findings: usize,
    /// The longest string in any field (a banner is already capped by the
    /// probes, far below this).
    pub max_string: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_results: 200_000,
            max_findings: 100_000,
            max_string: 16 * 1024,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunDoc {
    schema: String,
    info: InfoDoc,
    results: Vec<ResultDoc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoDoc {
    targets: Vec<String>,
    resolved: Vec<(String, Vec<IpAddr>)>,
    excluded: Vec<String>,
    ports: String,
    profile: String,
    seed: String,
    options: BTreeMap<String, String>,
    started: String,
    finished: Option<String>,
    complete: bool,
    n_probes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultDoc {
    address: IpAddr,
    port: u16,
    protocol: String,
    state: String,
    service: Option<ServiceDoc>,
    findings: Vec<FindingDoc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDoc {
    name: String,
    product: Option<String>,
    version: Option<String>,
    banner: Option<String>,
    tls: Option<TlsDoc>,
    auth: String,
    extra: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsDoc {
    subject: String,
    issuer: String,
    not_after: Option<String>,
    subject_alt_names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingDoc {
    rule: String,
    severity: String,
    subject: String,
    message: String,
    evidence: Vec<String>,
    remedy: String,
}

/// The document of a run (its store id is not part of it).
pub fn encode_run(info: &ScanInfo, results: &[PortResult]) -> Result<String, StoreError> {
    let doc = RunDoc {
        schema: RUN_SCHEMA.to_owned(),
        info: InfoDoc {
            targets: info.targets.clone(),
            resolved: info.resolved.clone(),
            excluded: info.excluded.clone(),
            ports: info.ports.clone(),
            profile: info.profile.clone(),
            seed: info.seed.to_string(),
            options: info.options.clone(),
            started: encode_time("scan start", info.started)?,
            finished: info
                .finished
                .map(|at| encode_time("scan end", at))
                .transpose()?,
            complete: info.complete,
            n_probes: info.n_probes,
        },
        results: results
            .iter()
            .map(|result| {
                Ok(ResultDoc {
                    address: result.address,
                    port: result.port,
                    protocol: result.protocol.as_str().to_owned(),
                    state: result.state.as_str().to_owned(),
                    service: result
                        .service
                        .as_ref()
                        .map(|service| {
                            Ok::<_, StoreError>(ServiceDoc {
                                name: service.name.clone(),
                                product: service.product.clone(),
                                version: service.version.clone(),
                                banner: service.banner.clone(),
                                tls: service
                                    .tls
                                    .as_ref()
                                    .map(|tls| {
                                        Ok::<_, StoreError>(TlsDoc {
                                            subject: tls.subject.clone(),
                                            issuer: tls.issuer.clone(),
                                            not_after: tls
                                                .not_after
                                                .map(|at| encode_time("certificate expiry", at))
                                                .transpose()?,
                                            subject_alt_names: tls.subject_alt_names.clone(),
                                        })
                                    })
                                    .transpose()?,
                                auth: service.auth.as_str().to_owned(),
                                extra: service.extra.clone(),
                            })
                        })
                        .transpose()?,
                    findings: result
                        .findings
                        .iter()
                        .map(|finding| FindingDoc {
                            rule: finding.rule.clone(),
                            severity: finding.severity.as_str().to_owned(),
                            subject: finding.subject.clone(),
                            message: finding.message.clone(),
                            evidence: finding.evidence.clone(),
                            remedy: finding.remedy.clone(),
                        })
                        .collect(),
                })
            })
            .collect::<Result<_, StoreError>>()?,
    };
    serde_json::to_string(&doc).map_err(|err| StoreError::Unrepresentable {
        what: "a scan run".to_owned(),
        detail: err.to_string(),
    })
}

/// The run a document holds (its info's id is 0), or what is wrong with it.
pub fn decode_run(text: &str, limits: RunLimits) -> Result<(ScanInfo, Vec<PortResult>), String> {
    let doc: RunDoc =
        serde_json::from_str(text).map_err(|err| format!("not a scan run document: {err}"))?;
    if doc.schema != RUN_SCHEMA {
        return Err(format!(
            "schema `{}` where {RUN_SCHEMA} was expected",
            excerpt(&doc.schema)
        ));
    }
    if doc.results.len() > limits.max_results {
        return Err(format!(
            "{} results, more than the {} a run may hold",
            doc.results.len(),
            limits.max_results
        ));
    }
    let n_findings: usize = doc.results.iter().map(|r| r.findings.len()).sum();
    if n_findings > limits.max_findings {
        return Err(format!(
            "{n_findings} findings, more than the {} a run may hold",
            limits.max_findings
        ));
    }
    let check = |what: &str, text: &str| -> Result<(), String> {
        if text.len() > limits.max_string {
            Err(format!(
                "{what} is {} bytes long, more than {}",
                text.len(),
                limits.max_string
            ))
        } else {
            Ok(())
        }
    };
    let InfoDoc {
        targets,
        resolved,
        excluded,
        ports,
        profile,
        seed,
        options,
        started,
        finished,
        complete,
        n_probes,
    } = doc.info;
    for text in targets.iter().chain(&excluded).chain(options.values()) {
        check("a target, exclude or option", text)?;
    }
    check("the ports", &ports)?;
    let info = ScanInfo {
        id: 0,
        targets,
        resolved,
        excluded,
        ports,
        profile,
        seed: seed
            .parse()
            .map_err(|_| format!("seed `{}` is not a 64-bit number", excerpt(&seed)))?,
        options,
        started: decode_time(&started)?,
        finished: finished.as_deref().map(decode_time).transpose()?,
        complete,
        n_probes,
    };
    let results = doc
        .results
        .into_iter()
        .map(|result| {
            let at = format!("result {}:{}", result.address, result.port);
            let in_result = |detail: String| format!("{at}: {detail}");
            let service = result
                .service
                .map(|service| {
                    for text in [&service.name]
                        .into_iter()
                        .chain(&service.product)
                        .chain(&service.version)
                        .chain(&service.banner)
                        .chain(service.extra.values())
                    {
                        check("a service field", text)?;
                    }
                    Ok::<_, String>(ServiceInfo {
                        tls: service
                            .tls
                            .map(|tls| {
                                for text in [&tls.subject, &tls.issuer]
                                    .into_iter()
                                    .chain(&tls.subject_alt_names)
                                {
                                    check("a certificate field", text)?;
                                }
                                Ok::<_, String>(TlsInfo {
                                    not_after: tls
                                        .not_after
                                        .as_deref()
                                        .map(decode_time)
                                        .transpose()?,
                                    subject: tls.subject,
                                    issuer: tls.issuer,
                                    subject_alt_names: tls.subject_alt_names,
                                })
                            })
                            .transpose()?,
                        auth: decode_auth(&service.auth)?,
                        name: service.name,
                        product: service.product,
                        version: service.version,
                        banner: service.banner,
                        extra: service.extra,
                    })
                })
                .transpose()
                .map_err(in_result)?;
            let findings = result
                .findings
                .into_iter()
                .map(|finding| {
                    for text in [
                        &finding.rule,
                        &finding.subject,
                        &finding.message,
                        &finding.remedy,
                    ]
                    .into_iter()
                    .chain(&finding.evidence)
                    {
                        check("a finding field", text)?;
                    }
                    Ok::<_, String>(Finding {
                        severity: decode_severity(&finding.severity)?,
                        rule: finding.rule,
                        subject: finding.subject,
                        message: finding.message,
                        evidence: finding.evidence,
                        remedy: finding.remedy,
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(in_result)?;
            Ok(PortResult {
                address: result.address,
                port: result.port,
                protocol: decode_protocol(&result.protocol).map_err(in_result)?,
                state: decode_port_state(&result.state).map_err(in_result)?,
                service,
                findings,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((info, results))
}

fn excerpt(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use perimeter_model::{AuthState, PortState, Protocol, Severity};
    use proptest::prelude::*;
    use time::macros::datetime;

    use super::*;

    fn sample() -> (ScanInfo, Vec<PortResult>) {
        let info = ScanInfo {
            id: 7,
            targets: vec!["198.18.0.0/24".into()],
            resolved: vec![("lab".into(), vec!["198.18.0.1".parse().expect("address")])],
            excluded: vec!["198.18.0.9".into()],
            ports: "top:100".into(),
            profile: "normal".into(),
            seed: u64::MAX - 3,
            options: [("shard".to_owned(), "1/4".to_owned())].into(),
            started: datetime!(2026-12-02 19:00:00.123456789 UTC),
            finished: Some(datetime!(2026-12-02 19:01:00 UTC)),
            complete: true,
            n_probes: 25_600,
        };
        let mut service = ServiceInfo::named("redis");
        service.version = Some("7.0.15".into());
        service.banner = Some("<script>alert(1)</script>".into());
        service.auth = AuthState::None;
        service.extra.insert("role".into(), "master".into());
        service.tls = Some(TlsInfo {
            subject: "CN=lab".into(),
            issuer: "CN=lab".into(),
            not_after: Some(datetime!(2027-01-01 00:00:00 UTC)),
            subject_alt_names: vec!["lab".into()],
        });
        let results = vec![PortResult {
            address: "198.18.0.1".parse().expect("address"),
            port: 6379,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(service),
            findings: vec![
                Finding::new("exposed.redis-no-auth", Severity::Critical, "s", "m")
                    .with_evidence("e")
                    .with_remedy("r"),
            ],
        }];
        (info, results)
    }

    #[test]
    fn a_run_reads_back_as_it_was_written_but_for_its_store_id() {
        let (info, results) = sample();
        let text = encode_run(&info, &results).expect("encode");
        let (back, back_results) = decode_run(&text, RunLimits::default()).expect("decode");
        assert_eq!(back, ScanInfo { id: 0, ..info });
        assert_eq!(back_results, results);
    }

    #[test]
    fn a_document_over_its_bounds_or_with_bad_values_is_refused_with_the_reason() {
        let (info, results) = sample();
        let text = encode_run(&info, &results).expect("encode");
        let tight = RunLimits {
            max_results: 0,
            ..RunLimits::default()
        };
        assert!(
            decode_run(&text, tight)
                .expect_err("refused")
                .contains("1 results")
        );
        let bad_state = text.replace("\"open\"", "\"ajar\"");
        let err = decode_run(&bad_state, RunLimits::default()).expect_err("refused");
        assert!(
            err.contains("198.18.0.1:6379") && err.contains("ajar"),
            "{err}"
        );
        let other_schema = text.replace(RUN_SCHEMA, "perimeter.scan-run/9");
        assert!(decode_run(&other_schema, RunLimits::default()).is_err());
        let long = RunLimits {
            max_string: 8,
            ..RunLimits::default()
        };
        assert!(
            decode_run(&text, long)
                .expect_err("refused")
                .contains("bytes long")
        );
    }

    proptest! {
        #[test]
        fn any_text_is_a_run_or_an_error_never_a_panic(text in ".{0,400}") {
            let _ = decode_run(&text, RunLimits::default());
        }
    }
}
