//! Installs the Debian packages the build and the emulators need.

use anyhow::Result;

pub fn ensure() -> Result<()> {
    Ok(())
}
