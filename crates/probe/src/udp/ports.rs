//! perimeter's own ranking of UDP ports for `scan --udp`, written for this
//! project. The order is "how much it matters if this answers from outside":
//!
//! 1. the services this crate has a question for and can prove an exposure on
//!    (open resolvers, NTP monlist, SNMP `public`, memcached, SSDP), plus the
//!    NetBIOS and mDNS name services that give a host's names away;
//! 2. the other well-known reflection and amplification vectors (US-CERT
//!    TA14-017A's list and the ones abused since: CLDAP, WS-Discovery, ARD,
//!    CoAP, SLP, the old "small services");
//! 3. remote management, authentication and VPN endpoints (IPMI, IKE, RADIUS,
//!    TFTP, syslog, SIP), where an answer means an attack surface;
//! 4. file sharing, directory, routing and overlay protocols, then media,
//!    industrial, discovery and game-server ports.
//!
//! UDP scanning is slow (silence has to be waited out), so the head matters
//! most. The list holds no duplicates and no port 0 (a test checks both).

/// UDP ports, most important first.
pub const UDP_TOP_PORTS: &[u16] = &[
    // 1. Questions this crate asks.
    53,    // dns
    123,   // ntp
    161,   // snmp
    137,   // netbios-ns
    1900,  // ssdp / upnp
    11211, // memcached
    5353,  // mdns
    // 2. Other reflection and amplification vectors.
    389,   // cldap (connectionless ldap, active directory)
    3702,  // ws-discovery
    19,    // chargen
    17,    // qotd
    7,     // echo
    13,    // daytime
    37,    // time
    111,   // portmapper / rpcbind
    427,   // slp (CVE-2023-29552)
    3283,  // apple remote desktop
    5683,  // coap
    520,   // rip
    1434,  // microsoft sql server browser
    10001, // ubiquiti discovery
    17185, // vxworks wdb debug agent
    6881,  // bittorrent dht
    27015, // steam / source engine queries
    26000, // quake network protocol
    5351,  // nat-pmp / pcp
    32414, // plex gdm discovery
    33848, // jenkins auto-discovery
    37810, // dahua dvr discovery
    3478,  // stun / turn
    // 3. Remote management, authentication, VPN.
    623,   // ipmi rmcp
    500,   // ike (ipsec)
    4500,  // ipsec nat traversal
    1194,  // openvpn
    51820, // wireguard
    1701,  // l2tp
    1812,  // radius authentication
    1813,  // radius accounting
    1645,  // radius authentication (old)
    1646,  // radius accounting (old)
    49,    // tacacs
    69,    // tftp
    514,   // syslog
    162,   // snmp trap
    5060,  // sip
    5061,  // sip over dtls
    88,    // kerberos
    464,   // kerberos kpasswd
    2049,  // nfs
    4789,  // vxlan
    8472,  // vxlan (linux default, flannel)
    6081,  // geneve
    3391,  // rd gateway udp transport
    3389,  // rdp udp transport
    443,   // quic / dtls vpns
    853,   // dns over quic
    1604,  // citrix ica browser
    5632,  // pcanywhere status
    177,   // xdmcp
    10000, // webmin / ndmp / various appliances
    // 4. Sharing, directory, routing, overlays.
    138,  // netbios datagram
    135,  // msrpc endpoint mapper
    445,  // smb (udp: rarely, but cheap to ask)
    631,  // ipp / cups browsing
    5355, // llmnr
    67,   // dhcp server
    68,   // dhcp client
    546,  // dhcpv6 client
    547,  // dhcpv6 server
    1985, // hsrp
    3222, // glbp
    3784, // bfd control
    7000, // afs fileserver
    7001, // afs callback
    2055, // netflow
    9995, // netflow (common collector)
    9996, // netflow (common collector)
    4739, // ipfix
    6343, // sflow
    2123, // gtp control (mobile core)
    2152, // gtp user plane
    3386, // gtp prime
    5246, // capwap control (wireless controllers)
    5247, // capwap data
    // Voice and media.
    5004, // rtp
    5005, // rtcp
    1719, // h.323 ras
    1718, // h.323 gatekeeper discovery
    2427, // mgcp gateway
    2727, // mgcp call agent
    // Industrial control: an answer from outside is an incident of its own.
    47808, // bacnet
    44818, // ethernet/ip explicit messaging
    2222,  // ethernet/ip implicit i/o
    502,   // modbus
    20000, // dnp3
    9600,  // omron fins
    34964, // profinet context manager
    // Discovery and sync agents.
    5678,  // mikrotik neighbour discovery
    30718, // lantronix discovery
    17500, // dropbox lan sync
    21027, // syncthing local discovery
    10080, // amanda backup
    5093,  // sentinel license manager
    9,     // discard
    // Game and voice-chat servers, which answer status queries to anyone.
    19132, // minecraft bedrock
    27960, // quake 3 engine
    7777,  // unreal engine games
    2302,  // arma / halo
    28015, // rust game server
    9987,  // teamspeak 3
    8767,  // teamspeak 2
    3074,  // xbox live
    3659,  // ea online games
];
