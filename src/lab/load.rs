//! Loading a lab from disk: a `.toml` file (`spec`) or a Kathará/Netkit directory (`kathara`).
//! It sits above both so that neither has to know the other.

use std::path::{Path, PathBuf};

use super::spec::{LabSpec, SpecError, Warning};

impl LabSpec {
    /// Loads a lab from a `.toml` file or a Kathará/Netkit directory (one holding `lab.conf`,
    /// or that `lab.conf` itself). Warnings about unused options go to the log: show them to a
    /// user with [`LabSpec::load_with_warnings`].
    pub fn load(path: &Path) -> Result<LabSpec, SpecError> {
        let (spec, warnings) = LabSpec::load_with_warnings(path)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(spec)
    }

    /// As [`LabSpec::load`], returning the warnings for the caller to show.
    pub fn load_with_warnings(path: &Path) -> Result<(LabSpec, Vec<Warning>), SpecError> {
        let dir = if path.is_dir() {
            Some(path.to_owned())
        } else if path.file_name().is_some_and(|n| n == "lab.conf") {
            Some(
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_owned),
            )
        } else {
            None
        };
        if let Some(dir) = dir {
            if !dir.join("lab.conf").is_file() {
                return Err(SpecError::NotALab {
                    path: path.to_owned(),
                });
            }
            let lab = super::kathara::load_dir(&dir)?;
            return Ok((lab.spec, lab.warnings));
        }
        let text = crate::util::read_regular_to_string(path, crate::util::MAX_LAB_FILE).map_err(
            |source| SpecError::Read {
                path: path.to_owned(),
                source,
            },
        )?;
        LabSpec::from_toml_str_with_warnings(&text, path)
    }
}
