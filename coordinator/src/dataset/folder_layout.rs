//! Kvasir-Capsule's layout: `<folder>/<class name>/<image>`, optionally with a metadata
//! CSV that gives each image its group and fixes the row order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::csv_table::Table;
use super::finding::{Finding, FindingKind, Location};
use super::paths::join_inside;
use super::raw::{RawRow, row_group};
use super::spec::Columns;

pub(crate) const IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"];

/// An image found in a class folder.
#[derive(Debug, Clone)]
struct FolderImage {
    class: String,
    /// `<class>/<file>`: the row's name, unique within the folder.
    name: String,
    path: PathBuf,
}

/// The training rows of a folder layout: in metadata order when there is metadata,
/// else sorted by class folder and file name.
pub(crate) fn read_folder_layout(
    folder: &Path,
    metadata: Option<&Path>,
    columns: &Columns,
    findings: &mut Vec<Finding>,
) -> Vec<RawRow> {
    let images = walk(folder, findings);
    match metadata {
        Some(metadata) => rows_from_metadata(folder, &images, metadata, columns, findings),
        None => {
            if let Some(group) = &columns.group {
                findings.push(Finding::error(
                    FindingKind::MissingColumn,
                    at(folder, None, None),
                    format!("the group column {group:?} needs a metadata csv (--metadata)"),
                ));
            }
            images
                .into_iter()
                .map(|image| RawRow {
                    location: at(folder, None, Some(image.name.clone())),
                    name: image.name,
                    path: image.path,
                    label: Some(image.class),
                    group: None,
                })
                .collect()
        }
    }
}

fn at(source: &Path, line: Option<u64>, file: Option<String>) -> Location {
    Location {
        source: Some(source.to_path_buf()),
        line,
        file,
    }
}

/// Every image in the class folders, sorted by class and file name.
fn walk(folder: &Path, findings: &mut Vec<Finding>) -> Vec<FolderImage> {
    let mut class_dirs = match sorted_entries(folder) {
        Ok(entries) => entries,
        Err(e) => {
            findings.push(Finding::error(
                FindingKind::UnreadableFile,
                at(folder, None, None),
                format!("cannot list the image folder: {e}"),
            ));
            return Vec::new();
        }
    };
    class_dirs.retain(|(name, path)| {
        if path.is_dir() {
            return true;
        }
        if !name.starts_with('.') {
            findings.push(Finding::warning(
                FindingKind::UnlistedImage,
                at(folder, None, Some(name.clone())),
                "not inside a class folder; left out",
            ));
        }
        false
    });
    if class_dirs.iter().any(|(name, _)| name == "labelled_images") {
        findings.push(Finding::warning(
            FindingKind::UnlistedImage,
            at(folder, None, None),
            "this folder holds \"labelled_images\"; pass that folder as --image-folder if it holds the class folders",
        ));
    }
    let mut images = Vec::new();
    for (class, dir) in class_dirs {
        let files = match sorted_entries(&dir) {
            Ok(files) => files,
            Err(e) => {
                findings.push(Finding::error(
                    FindingKind::UnreadableFile,
                    at(&dir, None, None),
                    format!("cannot list the class folder: {e}"),
                ));
                continue;
            }
        };
        for (file, path) in files {
            let name = format!("{class}/{file}");
            if file.starts_with('.') || path.is_dir() {
                continue;
            }
            let extension = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if !IMAGE_EXTENSIONS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(extension))
            {
                findings.push(Finding::warning(
                    FindingKind::UnlistedImage,
                    at(folder, None, Some(name)),
                    "not an image file extension; left out",
                ));
                continue;
            }
            images.push(FolderImage {
                class: class.clone(),
                name,
                path,
            });
        }
    }
    images
}

/// A directory's entries as (UTF-8 name, path), sorted by name; names that are not
/// UTF-8 are kept in lossy form so they can still be reported.
pub(crate) fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    entries.sort();
    Ok(entries)
}

/// The metadata columns a folder layout reads: the filename, and the group and label
/// when there are such columns.
struct MetadataColumns {
    filename: usize,
    group: Option<usize>,
    label: Option<usize>,
}

impl MetadataColumns {
    /// Finds the columns, reporting each missing one that is required; `None` when any
    /// required column is missing.
    fn find(table: &Table, columns: &Columns, findings: &mut Vec<Finding>) -> Option<Self> {
        let filename = table.column(columns.filename(), findings);
        let group = columns.group.as_deref().map(|g| table.column(g, findings));
        // The label comes from the folder; a metadata label column, when present, is
        // checked against it. Only an explicitly named label column must exist.
        let label = match &columns.label {
            Some(label) => table.column(label, findings),
            None => table.optional_column(columns.metadata_label()),
        };
        let filename = filename?;
        if group == Some(None) || (columns.label.is_some() && label.is_none()) {
            return None;
        }
        Some(Self {
            filename,
            group: group.flatten(),
            label,
        })
    }
}

/// The images of the class folders by `<class>/<file>` name and by bare file name, so
/// metadata may name an image either way.
struct ImageIndex<'a> {
    by_name: HashMap<&'a str, &'a FolderImage>,
    by_file: HashMap<&'a str, Vec<&'a FolderImage>>,
}

impl<'a> ImageIndex<'a> {
    fn new(images: &'a [FolderImage]) -> Self {
        let by_name = images.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut by_file: HashMap<&str, Vec<&FolderImage>> = HashMap::new();
        for image in images {
            let file = image.name.rsplit('/').next().unwrap_or_default();
            by_file.entry(file).or_default().push(image);
        }
        Self { by_name, by_file }
    }

    /// The one image `name` stands for; a name found in no class folder, or as a bare
    /// file name in several, is an error finding at `location`.
    fn find(
        &self,
        name: &str,
        folder: &Path,
        location: &Location,
        findings: &mut Vec<Finding>,
    ) -> Option<&'a FolderImage> {
        match (
            self.by_name.get(name),
            self.by_file.get(name).map(Vec::as_slice),
        ) {
            (Some(image), _) | (None, Some([image])) => Some(*image),
            (None, Some(several)) => {
                let classes: Vec<&str> = several.iter().map(|i| i.class.as_str()).collect();
                findings.push(Finding::error(
                    FindingKind::DuplicateFilename,
                    location.clone(),
                    format!("the file is in several class folders: {classes:?}"),
                ));
                None
            }
            (None, None) => {
                findings.push(Finding::error(
                    FindingKind::MissingFile,
                    location.clone(),
                    format!("no such image in any class folder of {}", folder.display()),
                ));
                None
            }
        }
    }
}

/// The training rows in metadata order, each image's label taken from its class folder.
/// Images the metadata does not list are warnings and left out.
fn rows_from_metadata(
    folder: &Path,
    images: &[FolderImage],
    metadata: &Path,
    columns: &Columns,
    findings: &mut Vec<Finding>,
) -> Vec<RawRow> {
    let Some(table) = Table::read(metadata, findings) else {
        return Vec::new();
    };
    let Some(cols) = MetadataColumns::find(&table, columns, findings) else {
        return Vec::new();
    };
    let index = ImageIndex::new(images);
    let mut listed = HashSet::new();
    let mut rows = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let name = row.fields[cols.filename].clone();
        let location = at(metadata, Some(row.line), Some(name.clone()));
        if let Err(message) = join_inside(folder, &name) {
            findings.push(Finding::error(FindingKind::PathEscapes, location, message));
            continue;
        }
        let Some(image) = index.find(&name, folder, &location, findings) else {
            continue;
        };
        listed.insert(image.name.as_str());
        if let Some(c) = cols.label {
            check_label(&row.fields[c], image, &location, findings);
        }
        let Some(group) = row_group(row, cols.group, columns, &location, findings) else {
            continue;
        };
        rows.push(RawRow {
            location: Location {
                file: Some(image.name.clone()),
                ..location
            },
            name: image.name.clone(),
            path: image.path.clone(),
            label: Some(image.class.clone()),
            group,
        });
    }
    for image in images.iter().filter(|i| !listed.contains(i.name.as_str())) {
        findings.push(Finding::warning(
            FindingKind::UnlistedImage,
            at(folder, None, Some(image.name.clone())),
            format!("not listed in {}; left out", metadata.display()),
        ));
    }
    rows
}

/// A metadata label that disagrees with the image's class folder is a warning; the
/// folder wins.
fn check_label(
    stated: &str,
    image: &FolderImage,
    location: &Location,
    findings: &mut Vec<Finding>,
) {
    if !stated.is_empty() && stated != image.class {
        findings.push(Finding::warning(
            FindingKind::LabelMismatch,
            location.clone(),
            format!(
                "the metadata says {stated:?} but the image is in the {:?} folder; the folder is used",
                image.class
            ),
        ));
    }
}
