#![no_main]
//! The text the container readers take from the host, all on the same
//! bytes: containers/storage's `storage.conf` and containerd's
//! configuration (TOML, read by the `toml` crate for its state and root), a
//! container's mount table (overlay's upper directory), and a network
//! namespace's `fib_trie` and `if_inet6` (its addresses). Whatever they
//! return is what the readers then use as paths or addresses: every path is
//! absolute (an upper directory with mountinfo's escapes is not guessed
//! at), `fib_trie` gives IPv4 addresses without loopback and `if_inet6`
//! IPv6 ones, each list sorted and without repeats. LXC's: a container's
//! configuration (its rootfs a directory or a backend's name), a monitor's
//! title (an absolute lxcpath and a name that is one path component), and
//! `lxc.lxcpath` in /etc/lxc/lxc.conf (absolute).

use libfuzzer_sys::fuzz_target;
use perimeter_host::containers::{
    overlay_upper_dir, parse_containerd_config_root, parse_containerd_config_state,
    parse_fib_trie_local, parse_if_inet6_global, parse_lxc_conf_lxcpath, parse_lxc_config,
    parse_monitor_title, parse_storage_conf, rootfs_dir,
};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let (graph_root, run_root) = parse_storage_conf(&text);
    for path in graph_root.iter().chain(run_root.iter()) {
        assert!(path.is_absolute(), "{path:?}");
    }
    if let Some(state) = parse_containerd_config_state(&text) {
        assert!(state.is_absolute(), "{state:?}");
    }
    if let Some(root) = parse_containerd_config_root(&text) {
        assert!(root.is_absolute(), "{root:?}");
    }
    if let Some(upper) = overlay_upper_dir(&text) {
        assert!(upper.is_absolute(), "{upper:?}");
        assert!(!upper.to_string_lossy().contains('\\'), "{upper:?}");
    }
    let v4 = parse_fib_trie_local(&text);
    assert!(v4.iter().all(|a| a.is_ipv4() && !a.is_loopback()), "{v4:?}");
    assert!(v4.windows(2).all(|w| w[0] < w[1]), "{v4:?}");
    let v6 = parse_if_inet6_global(&text);
    assert!(v6.iter().all(|a| a.is_ipv6()), "{v6:?}");
    assert!(v6.windows(2).all(|w| w[0] < w[1]), "{v6:?}");
    let config = parse_lxc_config(&text);
    let _ = config.image();
    if let Some(Ok(root)) = config.rootfs.as_deref().map(rootfs_dir) {
        assert!(root.is_absolute(), "{root:?}");
    }
    if let Some((lxcpath, name)) = parse_monitor_title(&text) {
        assert!(lxcpath.is_absolute(), "{lxcpath:?}");
        assert!(
            !name.is_empty() && !name.contains('/') && name != "..",
            "{name:?}"
        );
    }
    if let Some(lxcpath) = parse_lxc_conf_lxcpath(&text) {
        assert!(lxcpath.is_absolute(), "{lxcpath:?}");
    }
});
