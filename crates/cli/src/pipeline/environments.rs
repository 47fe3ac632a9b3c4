//! The inventory of environments, which the audit, `envs` and `verify` load
//! the same way.

use anyhow::{Result, bail};
use perimeter_checks::environments::{self, Environments};

use crate::args::InventoryFileArgs;
use crate::settings::{self, LOCAL_INVENTORY, SYSTEM_INVENTORY};

/// Load the inventory named by `--inventory`, else the first default that
/// exists; none at all is an empty inventory. A forced `--env` must name one
/// of its environments.
pub(crate) fn load(args: &InventoryFileArgs) -> Result<Environments> {
    let file = settings::inventory_file(args.path.as_deref());
    let inventory = environments::load(&file.path, !file.named)?;
    if let Some(env) = &args.env
        && inventory.by_name(env).is_none()
    {
        let known: Vec<&str> = inventory
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        if inventory.path.is_none() {
            bail!(
                "--env {env}: there is no inventory (looked for {LOCAL_INVENTORY} and {SYSTEM_INVENTORY}; see `perimeter init`)"
            );
        }
        bail!(
            "--env {env}: {} has no such environment (it has: {})",
            file.path.display(),
            known.join(", ")
        );
    }
    Ok(inventory)
}
