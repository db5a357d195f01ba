//! `herd worker`: the generation worker role.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the generation worker role is not built yet")
}
