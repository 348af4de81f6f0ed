//! Architecture-specific code. `x64`: x86-64 with Intel VT-x, the only one for now.

pub mod x64;
