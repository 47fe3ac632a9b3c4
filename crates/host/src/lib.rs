//! Facts about this host: listening sockets, the processes behind them, the
//! packages those came from, service configurations and the firewall.
//!
//! Each module pairs pure `parse_*(&str)` functions (tested on literal fixture
//! text) with thin `read_*` wrappers that open files or run commands. Partial
//! failure is data: what could not be read becomes a `Problem`, never a panic.

pub mod audit;
pub mod command;
pub mod containers;
pub mod firewall;
pub mod interfaces;
pub mod listeners;
pub mod netns;
pub mod packages;
pub mod procs;
pub mod redis;
pub mod sockets;
pub mod sshd;
pub mod users;
