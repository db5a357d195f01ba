//! `herd judge-worker`: the judge worker role.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the judge worker role is not built yet")
}
