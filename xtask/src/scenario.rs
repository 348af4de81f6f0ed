//! The test runner: host unit tests, then the emulator scenarios in `tests/`.

use anyhow::Result;

pub fn run_all(_filter: Option<&str>, _unit_only: bool) -> Result<()> {
    todo!()
}
