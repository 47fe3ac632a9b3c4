//! perimeter's own ranking of TCP ports for `--top-ports`, written for this
//! project: the order is "how much it matters if this is reachable from outside",
//! not how often a port is seen on the internet. Databases, caches, queues,
//! cluster control planes and remote-access services come before the everyday web
//! ports' long tail, because an exposed Redis or kubelet is an incident and an
//! exposed web server usually is not.
//!
//! The head (about the first 200) names the service on each line. The tail is
//! ordered by common knowledge: well-known service ports first, then the
//! alternate HTTP and admin-panel ports that appliances and developers pick, then
//! the dynamic ranges Windows RPC, NodePort services and friends land in. The
//! list holds no duplicates and no port 0 (a test checks both).

/// TCP ports, most important first.
pub(crate) const RANKED: &[u16] = &[
    // Remote access and the web: what everyone scans for first.
    22,   // ssh
    80,   // http
    443,  // https
    3389, // rdp
    // Data stores that are an incident when reachable without auth.
    6379,  // redis
    5432,  // postgresql
    3306,  // mysql / mariadb
    27017, // mongodb
    9200,  // elasticsearch / opensearch http
    11211, // memcached
    // Container and cluster control planes: reachable means root on the cluster.
    2375,  // docker engine api, plain text
    2376,  // docker engine api, tls
    6443,  // kubernetes api server
    10250, // kubelet api
    2379,  // etcd client
    2380,  // etcd peer
    10255, // kubelet read-only
    // Remote desktops and legacy cleartext logins.
    5900, // vnc display :0
    23,   // telnet
    21,   // ftp
    // Windows file sharing and RPC.
    445, // smb
    139, // netbios session
    135, // msrpc endpoint mapper
    // More databases.
    1433, // microsoft sql server
    1521, // oracle tns listener
    // Alternate web ports and the admin panels that live on them.
    8080, // http alternate, proxies, tomcat, jenkins
    8443, // https alternate, admin consoles
    8000, // http alternate, dev servers, kong proxy
    8888, // jupyter notebook
    5601, // kibana
    9090, // prometheus, cockpit
    3000, // grafana, node dev servers
    // Message queues and their consoles.
    5672,  // amqp (rabbitmq)
    15672, // rabbitmq management
    9092,  // kafka
    2181,  // zookeeper
    // More databases and search.
    5984, // couchdb
    8086, // influxdb
    9042, // cassandra cql
    7474, // neo4j http
    7687, // neo4j bolt
    // Service discovery and secrets.
    8500, // consul http api
    8200, // hashicorp vault
    4646, // nomad http api
    // Object stores, fpm and container consoles.
    9000,  // php-fpm, minio api, portainer, sonarqube, clickhouse native
    9001,  // minio console, supervisord
    9443,  // portainer https, admission webhooks
    8081,  // http alternate, nexus, schema registry
    8001,  // kubectl proxy, kong admin
    10256, // kube-proxy health
    // File sharing and rpc services.
    2049, // nfs
    111,  // rpcbind / portmapper
    // Mail.
    25,  // smtp
    465, // smtps
    587, // submission
    110, // pop3
    995, // pop3s
    143, // imap
    993, // imaps
    // Directory and name services.
    53,  // dns over tcp (zone transfers)
    389, // ldap
    636, // ldaps
    88,  // kerberos
    // Windows remote management.
    5985, // winrm http
    5986, // winrm https
    // File sync and proxies.
    873,  // rsync
    3128, // squid proxy
    1080, // socks proxy
    8118, // privoxy
    4444, // metasploit default handler, galera sst
    5000, // docker registry, flask, upnp, synology dsm
    5001, // synology dsm https, iperf
    // Security and monitoring consoles.
    8089, // splunk management
    8834, // nessus
    9100, // node_exporter, jetdirect printing
    9093, // alertmanager, kafka tls
    9091, // prometheus pushgateway, transmission
    // Remote desktop variants.
    6080, // novnc
    5800, // vnc over http
    5901, // vnc display :1
    5902, // vnc display :2
    6000, // x11 display :0
    6001, // x11 display :1
    // Brokers.
    8161,  // activemq web console
    61616, // activemq openwire
    1883,  // mqtt
    8883,  // mqtt over tls
    4369,  // erlang port mapper (epmd)
    25672, // rabbitmq inter-node
    // Redis family and wide-column stores.
    6380,  // redis alternate / tls
    26379, // redis sentinel
    7000,  // redis cluster, cassandra inter-node
    7001,  // cassandra inter-node tls, weblogic
    7199,  // cassandra jmx
    9160,  // cassandra thrift
    // Search and logging pipelines.
    8983,  // solr
    9300,  // elasticsearch transport
    5044,  // logstash beats input
    9600,  // logstash monitoring api
    28017, // mongodb http status (old versions)
    27018, // mongodb shard server
    27019, // mongodb config server
    // Big data.
    50000, // db2, jenkins agents, sap
    50070, // hadoop namenode web (2.x)
    9870,  // hadoop namenode web (3.x)
    8088,  // hadoop yarn resource manager
    8020,  // hdfs namenode rpc
    16010, // hbase master web
    10000, // hive server2, webmin
    7077,  // spark master
    4040,  // spark application ui
    6066,  // spark rest submission
    // Storage and telephony.
    3260, // iscsi
    5060, // sip
    5061, // sip over tls
    1723, // pptp
    1194, // openvpn over tcp
    // Monitoring and configuration management agents.
    10050, // zabbix agent
    10051, // zabbix server
    5666,  // nagios nrpe
    4949,  // munin node
    8140,  // puppet server
    4505,  // salt publisher
    4506,  // salt request server
    // Source control.
    9418, // git daemon
    3690, // subversion
    // Alternate ssh ports.
    2222, // ssh alternate
    2022, // ssh alternate
    222,  // ssh alternate
    // Debug interfaces that should never face a network.
    5555, // android debug bridge
    5037, // adb server
    5005, // java debug wire protocol
    9229, // node.js inspector
    5858, // node.js legacy debugger
    2345, // delve (go debugger)
    6060, // go pprof
    1099, // java rmi registry
    9010, // jmx remote
    // Java application servers.
    8009, // ajp (tomcat)
    8005, // tomcat shutdown port
    9990, // wildfly management
    4848, // glassfish admin
    7002, // weblogic ssl
    8880, // websphere soap
    9060, // websphere admin
    9043, // websphere admin https
    // Hosting panels.
    2082,  // cpanel
    2083,  // cpanel ssl
    2086,  // whm
    2087,  // whm ssl
    2095,  // cpanel webmail
    2096,  // cpanel webmail ssl
    8006,  // proxmox ve
    20000, // usermin, dnp3
    // Machine learning and notebooks.
    11434, // ollama
    7860,  // gradio
    8265,  // ray dashboard
    6006,  // tensorboard
    8787,  // rstudio server
    // Observability back ends.
    19999, // netdata
    3100,  // loki
    9411,  // zipkin
    16686, // jaeger ui
    14268, // jaeger collector
    4317,  // opentelemetry grpc
    4318,  // opentelemetry http
    2003,  // graphite carbon
    24224, // fluentd forward
    8125,  // statsd
    // Legacy r-services and syslog.
    512,  // rexec
    513,  // rlogin
    514,  // rsh
    6514, // syslog over tls
    // Chat, anonymity and blockchain nodes.
    6667, // irc
    9050, // tor socks
    9051, // tor control
    8332, // bitcoin rpc
    8545, // ethereum json-rpc
    // Front-end dev servers and grpc.
    4200,  // angular dev server
    5173,  // vite dev server
    50051, // grpc
    // Atlassian and code hosting.
    8090, // confluence
    7990, // bitbucket server
    8060, // gitlab nginx status, alternate http
    // Out-of-band management and hypervisors.
    623,   // ipmi
    17988, // hp ilo virtual media
    5988,  // wbem http
    5989,  // wbem https
    902,   // vmware authentication daemon
    16509, // libvirt
    16514, // libvirt tls
    // Other remote-control tools.
    5938, // teamviewer
    4899, // radmin
    5631, // pcanywhere
    1494, // citrix ica
    2598, // citrix session reliability
    3283, // apple remote desktop
    // Windows domain services.
    464,   // kerberos password change
    3268,  // global catalog
    3269,  // global catalog over tls
    9389,  // active directory web services
    593,   // rpc over http
    47001, // winrm listener
    // Industrial control systems: never on a network a stranger can reach.
    502,   // modbus
    102,   // siemens s7
    44818, // ethernet/ip
    4840,  // opc ua
    1911,  // niagara fox
    20547, // proconos
    // Network gear management.
    8291, // mikrotik winbox
    8728, // mikrotik api
    8729, // mikrotik api ssl
    179,  // bgp
    830,  // netconf over ssh
    2601, // zebra vty
    2604, // ospfd vty
    4786, // cisco smart install
    7547, // tr-069 cwmp
    // Home and media servers.
    32400, // plex
    8096,  // jellyfin
    8123,  // home assistant, clickhouse http
    1880,  // node-red
    // Everything below is the tail, in rough order of how often operators meet it.
    // Database variants and proxies.
    5433, 6432, 26257, 4000, 9004, 9009, 8529, 28015, 8091, 11210, 6033, 6032, 3307, 33060, 4567,
    4568, 1527, 2424, 2480, 8182, 3050, 523, 2483, 2484, 5500, 1158, 7777, 8087, 8098, 1434, 5434,
    3308, 9306, 9312, 8765, 7200, 8093, 8094, 8095, // Queue and streaming variants.
    4222, 6222, 8222, 4150, 4151, 4160, 4161, 5671, 61613, 61614, 6650, 6651, 29092, 8083, 8082,
    9021, 5552, 15692, 1414, 7222, 11222, // Container, mesh and cluster plumbing.
    2377, 7946, 9323, 10248, 10249, 10257, 10259, 6783, 9099, 4240, 4244, 9153, 10254, 16443, 9345,
    2381, 15000, 15001, 15006, 15010, 15012, 15014, 15017, 15020, 15021, 9901, 8444, 5050, 5051,
    4243, 4194, 7472, 8472, 6781, 6782, // OpenStack.
    35357, 8774, 8776, 9292, 9696, 8004, 8778, 9876, 8041, 9511, 6385, 8779, 8386,
    // Mail variants and filters.
    2525, 24, 4190, 106, 109, 10024, 10025, 11334, 783, 3310, 8025, 1025,
    // Remote access and vpn variants.
    5903, 5904, 5905, 5906, 5910, 6129, 4172, 5120, 17990, 3478, 5349, 1701,
    // Messaging and media.
    5222, 5269, 5280, 8448, 1935, 554, 8554, 10554, 37777, 34567, 64738,
    // Classic internet services.
    7, 9, 13, 17, 19, 37, 43, 70, 79, 113, 119, 563, 194, 311, 427, 444, 497, 515, 543, 544, 548,
    631, 646, 666, 749, 989, 990, 992, 994, 1241, 1311, 1352, 1524, 1720, 1755, 1801, 1812, 1863,
    1900, 2000, 2001, 2002, 2100, 2121, 2301, 2404, 2427, 2967, 3052, 3299, 3632, 3689, 3780, 3790,
    4045, 4125, 4353, 4662, 4711, 4730, 4911, 5009, 5038, 5190, 5357, 5405, 5560, 5632, 5722, 6346,
    6697, 6789, 6800, 7100, 7180, 7548, 8007, 8101, 8112, 8172, 8300, 8301, 8302, 8333, 8388, 8530,
    8531, 8600, 8649, 8761, 8848, 9030, 9083, 9101, 9102, 9103, 9290, 9535, 9618, 10080, 11112,
    104, 2575, 12345, 13720, 13722, 13782, 13783, 16992, 16993, 18264, 19888, 25565, 27015, 31337,
    32764, 37215, 49152, 49153, 49154, 49155, 49156, 49157, 49158, 50030, 50060, 50075, 50090,
    52869, 55553, 60010, 60020, 62078, 789, 2455, 18245, 1962, 4443, 10443, 4433, 8008, 8010,
    // Alternate web and admin-panel ports.
    81, 82, 83, 84, 85, 86, 87, 89, 90, 591, 800, 808, 843, 888, 1000, 1010, 1234, 1337, 2030, 2048,
    3001, 3002, 3003, 3004, 3005, 3006, 3007, 3008, 3009, 3010, 3333, 3443, 3500, 4001, 4002, 4003,
    4004, 4005, 4080, 4430, 4500, 5002, 5003, 5004, 5006, 5007, 5008, 5010, 5080, 5100, 5200, 5443,
    5678, 5679, 5801, 5802, 6002, 6003, 6004, 6005, 6543, 6565, 6588, 7070, 7071, 7080, 7443, 7778,
    7779, 7800, 7878, 7890, 8002, 8003, 8011, 8012, 8013, 8014, 8015, 8016, 8017, 8018, 8019, 8021,
    8022, 8023, 8024, 8026, 8027, 8028, 8029, 8030, 8031, 8032, 8033, 8034, 8035, 8036, 8037, 8038,
    8039, 8040, 8042, 8043, 8044, 8045, 8046, 8047, 8048, 8049, 8050, 8051, 8052, 8053, 8054, 8055,
    8056, 8057, 8058, 8059, 8061, 8062, 8063, 8064, 8065, 8066, 8067, 8068, 8069, 8070, 8071, 8072,
    8073, 8074, 8075, 8076, 8077, 8078, 8079, 8084, 8085, 8092, 8097, 8099, 8100, 8111, 8139, 8180,
    8181, 8243, 8280, 8281, 8383, 8400, 8402, 8651, 8652, 8686, 8800, 8812, 8843, 8873, 8881, 8887,
    8889, 8899, 8999, 9002, 9003, 9005, 9006, 9007, 9008, 9011, 9012, 9020, 9040, 9070, 9071, 9080,
    9081, 9082, 9084, 9085, 9086, 9087, 9088, 9089, 9094, 9095, 9096, 9097, 9098, 9110, 9111, 9119,
    9191, 9201, 9202, 9415, 9444, 9445, 9500, 9502, 9503, 9595, 9666, 9700, 9711, 9777, 9800, 9877,
    9878, 9898, 9900, 9917, 9929, 9943, 9944, 9968, 9981, 9998, 9999, 10001, 10002, 10003, 10004,
    10005, 10008, 10009, 10010, 10082, 10243, 10566, 11111, 12000, 12443, 16080, 17000, 18080,
    18081, 18091, 18092, 19150, 20005, 20031, 20720, 20828, 22222, 23023, 28080, 55555, 60000,
    // Further http alternates appliances use.
    8102, 8103, 8104, 8105, 8106, 8107, 8108, 8109, 8110, 8113, 8114, 8115, 8116, 8117, 8119, 8120,
    8121, 8122, 8124, 8126, 8127, 8128, 8129, 8130, 8131, 8132, 8133, 8134, 8135, 8136, 8137, 8138,
    8141, 8142, 8143, 8144, 8145, 8146, 8147, 8148, 8149, 8150, 8160, 8162, 8163, 8164, 8165, 8166,
    8167, 8168, 8169, 8170, 8171, 8173, 8174, 8175, 8176, 8177, 8178, 8179, 8183, 8184, 8185, 8186,
    8187, 8188, 8189, 8190, 8191, 8192, 8193, 8194, 8195, 8196, 8197, 8198, 8199, 8201, 8202, 8203,
    8204, 8205, 8210, 8220, 8230, 8240, 8250, 8260, 8270, 8290, 8350, 8360, 8370, 8380, 8390, 8399,
    8401, 8403, 8404, 8405, 8410, 8420, 8430, 8440, 8441, 8442, 8445, 8446, 8447, 8449, 8450, 8480,
    8484, 8488, 8490, 8499, 8501, 8502, 8503, 8504, 8505, 8510, 8520, 8540, 8550, 8560, 8580, 8585,
    8590, 8610, 8620, 8640, 8650, 8660, 8666, 8670, 8680, 8690, 8700, 8710, 8720, 8730, 8740, 8750,
    8760, 8770, 8780, 8788, 8790, 8799, 8801, 8802, 8808, 8810, 8820, 8830, 8840, 8850, 8860, 8870,
    8877, 8878, 8879, 8882, 8884, 8885, 8886, 8890, 8891, 8892, 8893, 8894, 8895, 8896, 8897, 8898,
    8900, 8901, 8902, 8903, 8908, 8910, 8920, 8930, 8940, 8950, 8960, 8970, 8980, 8988, 8990, 8998,
    9013, 9014, 9015, 9016, 9017, 9018, 9019, 9022, 9023, 9024, 9025, 9026, 9027, 9028, 9029, 9031,
    9032, 9033, 9034, 9035, 9036, 9037, 9038, 9039, 9041, 9044, 9045, 9046, 9047, 9048, 9049, 9052,
    9053, 9054, 9055, 9056, 9057, 9058, 9059, 9061, 9062, 9063, 9064, 9065, 9066, 9067, 9068, 9069,
    9072, 9073, 9074, 9075, 9076, 9077, 9078, 9079,
    // Windows dynamic RPC and NodePort starts.
    1024, 1026, 1027, 1028, 1029, 1030, 1031, 1032, 1033, 1034, 1035, 1036, 1037, 1038, 1039, 1040,
    1041, 1042, 1043, 1044, 1045, 1046, 1047, 1048, 1049, 1050, 49159, 49160, 49161, 49162, 49163,
    49164, 49165, 49166, 49167, 49168, 49169, 49170, 30000, 30001, 30002, 30003, 30004, 30005,
    30006, 30007, 30008, 30009, 30010, 30080, 30443, 31000, 31080, 31443, 32000, 32080, 32443,
    32767,
];
