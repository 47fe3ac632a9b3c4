//! The rule ids of the findings probes raise, and one constructor per rule so a
//! rule's severity, message and remedy are written once.
//!
//! A probe raises a finding only for what an answer proves: the service did
//! something for a client that presented no credentials. `subject` is left empty;
//! the scan driver fills it with the address and port.

use perimeter_model::{Finding, Severity};

/// Redis answered commands without AUTH.
pub const REDIS_NOAUTH: &str = "exposed.redis-noauth";
/// memcached answered; it has no authentication unless SASL or an auth file is
/// configured, and then it would have refused.
pub const MEMCACHED: &str = "exposed.memcached";
/// MongoDB listed its databases to an unauthenticated client.
pub const MONGODB_NOAUTH: &str = "exposed.mongodb-noauth";
/// Elasticsearch (or OpenSearch) answered its REST API without credentials.
pub const ELASTICSEARCH_OPEN: &str = "exposed.elasticsearch-open";
/// The Docker Engine API answered: whoever reaches it is root on the host.
pub const DOCKER_API: &str = "exposed.docker-api";
/// A container registry (the Distribution API) answered `/v2/` without
/// credentials.
pub const REGISTRY_OPEN: &str = "exposed.registry-open";
/// etcd served a key-value read without credentials.
pub const ETCD_OPEN: &str = "exposed.etcd-open";
/// The kubelet API listed pods without credentials.
pub const KUBELET_OPEN: &str = "exposed.kubelet-open";
/// A VNC server offered the "None" security type.
pub const VNC_NOAUTH: &str = "exposed.vnc-noauth";
/// A DNS server answered a recursive query for a name it is not authoritative
/// for (see `udp::dns::recursion_outcome` for what one reply proves).
pub const DNS_OPEN_RESOLVER: &str = "exposed.dns-open-resolver";
/// An NTP server answered a mode 7 MON_GETLIST_1 (monlist) request.
pub const NTP_MONLIST: &str = "exposed.ntp-monlist";
/// An NTP server answered a mode 6 READVAR control request.
pub const NTP_MODE6: &str = "exposed.ntp-mode6";
/// An SNMP agent answered a GetRequest with the community `public`.
pub const SNMP_PUBLIC: &str = "exposed.snmp-public";
/// memcached answered a command over UDP.
pub const MEMCACHED_UDP: &str = "exposed.memcached-udp";
/// A host answered an SSDP M-SEARCH sent to it by unicast.
pub const SSDP: &str = "exposed.ssdp";

/// Every rule id above, for documentation and tests.
pub const ALL: [&str; 15] = [
    REDIS_NOAUTH,
    MEMCACHED,
    MONGODB_NOAUTH,
    ELASTICSEARCH_OPEN,
    DOCKER_API,
    REGISTRY_OPEN,
    ETCD_OPEN,
    KUBELET_OPEN,
    VNC_NOAUTH,
    DNS_OPEN_RESOLVER,
    NTP_MONLIST,
    NTP_MODE6,
    SNMP_PUBLIC,
    MEMCACHED_UDP,
    SSDP,
];

/// One finding per rule, as the probes raise it (without evidence): the
/// catalogue `perimeter rules` prints, from the same constructors the probes
/// use, so the two cannot disagree.
pub fn catalogue() -> Vec<Finding> {
    vec![
        redis_noauth(Vec::new()),
        memcached(Vec::new()),
        mongodb_noauth(Vec::new()),
        elasticsearch_open(Vec::new()),
        docker_api(Vec::new()),
        registry_open(Vec::new()),
        etcd_open(Vec::new()),
        kubelet_open(Vec::new()),
        vnc_noauth(Vec::new()),
        dns_open_resolver(Vec::new()),
        ntp_monlist(Vec::new()),
        ntp_mode6(Vec::new()),
        snmp_public(Vec::new()),
        memcached_udp(Vec::new()),
        ssdp(Vec::new()),
    ]
}

fn finding(
    rule: &str,
    severity: Severity,
    message: &str,
    remedy: &str,
    evidence: Vec<String>,
) -> Finding {
    let mut finding = Finding::new(rule, severity, "", message).with_remedy(remedy);
    finding.evidence = evidence;
    finding
}

pub(crate) fn redis_noauth(evidence: Vec<String>) -> Finding {
    finding(
        REDIS_NOAUTH,
        Severity::Critical,
        "Redis answers commands without authentication",
        "set `requirepass` (or ACL users with passwords) and bind Redis to loopback or a private \
         address behind a firewall; an open Redis lets anyone read and overwrite data and often \
         gain code execution",
        evidence,
    )
}

pub(crate) fn memcached(evidence: Vec<String>) -> Finding {
    finding(
        MEMCACHED,
        Severity::High,
        "memcached answers without authentication",
        "bind memcached to loopback (`-l 127.0.0.1`), disable UDP (`-U 0`) and firewall the port; \
         enable SASL or an auth file (`-Y`) if remote clients need it",
        evidence,
    )
}

pub(crate) fn mongodb_noauth(evidence: Vec<String>) -> Finding {
    finding(
        MONGODB_NOAUTH,
        Severity::Critical,
        "MongoDB lists its databases without authentication",
        "enable access control (`security.authorization: enabled`), create users, and bind \
         MongoDB to private addresses behind a firewall",
        evidence,
    )
}

pub(crate) fn elasticsearch_open(evidence: Vec<String>) -> Finding {
    finding(
        ELASTICSEARCH_OPEN,
        Severity::High,
        "Elasticsearch answers its REST API without authentication",
        "enable security (`xpack.security.enabled: true`) with passwords or API keys, and keep \
         the HTTP port off untrusted networks",
        evidence,
    )
}

pub(crate) fn docker_api(evidence: Vec<String>) -> Finding {
    finding(
        DOCKER_API,
        Severity::Critical,
        "the Docker Engine API (or Podman's, which speaks it) answers without authentication \
         (root on the host for anyone who reaches it, when the daemon runs as root)",
        "stop listening on TCP (remove dockerd's `-H tcp://...`, or give `podman system service` \
         a unix socket), or require mutual TLS (`--tlsverify`) and firewall the port; use the \
         unix socket or SSH for remote access",
        evidence,
    )
}

pub(crate) fn registry_open(evidence: Vec<String>) -> Finding {
    finding(
        REGISTRY_OPEN,
        Severity::High,
        "a container registry serves its API without authentication: anyone who reaches it can \
         pull every image and the secrets built into them, and push or delete where its storage allows",
        "enable authentication (`auth: htpasswd` or a token service) with TLS, or bind the \
         registry to loopback and reach it through a tunnel",
        evidence,
    )
}

pub(crate) fn etcd_open(evidence: Vec<String>) -> Finding {
    finding(
        ETCD_OPEN,
        Severity::Critical,
        "etcd serves key-value reads without authentication",
        "require client certificates (`--client-cert-auth`) or enable etcd authentication, and \
         keep client ports off untrusted networks",
        evidence,
    )
}

pub(crate) fn kubelet_open(evidence: Vec<String>) -> Finding {
    finding(
        KUBELET_OPEN,
        Severity::Critical,
        "the kubelet API lists pods without authentication (and likely allows exec into them)",
        "set `authentication.anonymous.enabled: false` and `authorization.mode: Webhook` in the \
         kubelet configuration, and firewall port 10250",
        evidence,
    )
}

pub(crate) fn vnc_noauth(evidence: Vec<String>) -> Finding {
    finding(
        VNC_NOAUTH,
        Severity::Critical,
        "the VNC server offers the \"None\" security type: anyone can see and control the desktop",
        "require a password or VeNCrypt/TLS authentication, and tunnel VNC over SSH instead of \
         exposing it",
        evidence,
    )
}

/// High: an open resolver reflects and amplifies spoofed queries at anyone
/// (a 40-byte question draws answers of several kilobytes) and lets outsiders
/// probe its cache.
pub(crate) fn dns_open_resolver(evidence: Vec<String>) -> Finding {
    finding(
        DNS_OPEN_RESOLVER,
        Severity::High,
        "the DNS server resolves names for any client (open resolver)",
        "allow recursion only for your own networks (BIND `allow-recursion`, Unbound \
         `access-control`, dnsmasq `--local-service` or `--interface`) or turn it off on \
         authoritative servers, and firewall UDP/TCP 53 from outside",
        evidence,
    )
}

/// High: monlist is the ~557x NTP amplification of CVE-2013-5211, and its
/// answer lists the addresses of up to 600 recent clients.
pub(crate) fn ntp_monlist(evidence: Vec<String>) -> Finding {
    finding(
        NTP_MONLIST,
        Severity::High,
        "the NTP server answers mode 7 monlist requests (CVE-2013-5211 amplification)",
        "upgrade ntpd (4.2.7p26 and later no longer answer monlist, and current releases \
         answer mode 7 only with `enable mode7`), or add `restrict default noquery` to \
         ntp.conf",
        evidence,
    )
}

/// Medium: a READVAR answer is tens of times the request but bounded, and gives
/// away the daemon's exact version and OS.
pub(crate) fn ntp_mode6(evidence: Vec<String>) -> Finding {
    finding(
        NTP_MODE6,
        Severity::Medium,
        "the NTP server answers mode 6 control queries (ntpq) from this network",
        "add `noquery` to the `restrict default` lines of ntp.conf (keep queries for \
         localhost only), or firewall UDP 123 to time service only",
        evidence,
    )
}

/// High: `public` is the factory read community; an agent that accepts it shows
/// interfaces, routes, processes and often software to anyone, and answers
/// GetBulk with large amplified replies.
pub(crate) fn snmp_public(evidence: Vec<String>) -> Finding {
    finding(
        SNMP_PUBLIC,
        Severity::High,
        "the SNMP agent answers the default community \"public\"",
        "remove the `public` community (use SNMPv3 with authentication, or a long random \
         community limited to your monitoring hosts) and firewall UDP 161",
        evidence,
    )
}

/// High: memcached over UDP is the 2018 reflection vector (amplification up to
/// ~50,000x with a stored value).
pub(crate) fn memcached_udp(evidence: Vec<String>) -> Finding {
    finding(
        MEMCACHED_UDP,
        Severity::High,
        "memcached answers over UDP (reflection and amplification)",
        "turn UDP off (`-U 0`, the default since memcached 1.5.6), bind memcached to \
         loopback (`-l 127.0.0.1`) and firewall port 11211",
        evidence,
    )
}

/// Medium: SSDP from outside the LAN is a reflection vector and describes the
/// device, but answering on the LAN is what it is for.
pub(crate) fn ssdp(evidence: Vec<String>) -> Finding {
    finding(
        SSDP,
        Severity::Medium,
        "the host answers SSDP searches (UPnP discovery) sent to it directly",
        "stop the UPnP/SSDP service or bind it to the LAN interface, and drop UDP 1900 from \
         untrusted networks at the firewall",
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_distinct_and_dotted() {
        let mut ids = ALL.to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        assert!(ALL.iter().all(|id| id.starts_with("exposed.")));
    }

    #[test]
    fn constructors_leave_subject_to_the_driver() {
        let f = redis_noauth(vec!["PING answered +PONG without AUTH".into()]);
        assert_eq!(f.rule, REDIS_NOAUTH);
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.subject.is_empty());
        assert!(!f.remedy.is_empty());
        assert_eq!(
            f.evidence,
            vec!["PING answered +PONG without AUTH".to_string()]
        );
        assert_eq!(memcached(vec![]).severity, Severity::High);
    }
}

#[cfg(test)]
mod catalogue_tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_rule_once() {
        let ids: Vec<String> = catalogue().into_iter().map(|f| f.rule).collect();
        assert_eq!(ids, ALL.map(String::from).to_vec());
    }
}
