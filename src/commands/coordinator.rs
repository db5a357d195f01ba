//! `herd coordinator`: the coordinator role.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the coordinator role is not built yet")
}
