//! `@NAME@` substitution for the config templates (`boot/grub.cfg.in`,
//! `qemu/bochsrc.in`).

use anyhow::{bail, Result};

/// Replaces every `@NAME@` in `template` with its value from `vars`. Fails
/// on a field no value was given for, so a template and its caller cannot
/// drift apart silently.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('@') {
            let name = &after[..name_len];
            match vars.iter().find(|(k, _)| *k == name) {
                Some((_, v)) => out.push_str(v),
                None => bail!("template field @{name}@ has no value"),
            }
            rest = &after[name_len + 1..];
        } else {
            out.push('@');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_fields() {
        let t = "a=@A@ b=@B_2@ mail@host @A@";
        let s = fill(t, &[("A", "1".into()), ("B_2", "two".into())]).unwrap();
        assert_eq!(s, "a=1 b=two mail@host 1");
    }

    #[test]
    fn unknown_field_fails() {
        assert!(fill("@NOPE@", &[]).is_err());
    }

    #[test]
    fn lone_at_signs_stay() {
        assert_eq!(fill("@ @@ x@", &[]).unwrap(), "@ @@ x@");
    }
}
