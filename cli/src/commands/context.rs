//! What the fleet commands share.

use std::path::Path;

use troop_coordinator::fleet::Fleet;

use crate::cli::Output;

/// What the fleet commands share: the fleet (config and dispatcher), the output format.
#[derive(Clone)]
pub struct Context {
    pub fleet: Fleet,
    pub output: Output,
}

impl Context {
    pub fn load(explicit: Option<&Path>, output: Output) -> anyhow::Result<Self> {
        Ok(Self {
            fleet: Fleet::load(explicit)?,
            output,
        })
    }

    /// As [`Context::load`], and with `[coordinator]` the fleet that serve shows now.
    pub async fn connect(explicit: Option<&Path>, output: Output) -> anyhow::Result<Self> {
        let mut context = Self::load(explicit, output)?;
        context.fleet.refresh().await?;
        Ok(context)
    }
}
