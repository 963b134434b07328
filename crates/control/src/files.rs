//! Manifests from files and directories, re-read incrementally and watched.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sluice_config::{ConfigError, Manifest, parse_manifests};
use sluice_filter::Snapshot;
use tokio::sync::mpsc;

use crate::publish::Publisher;
use crate::reload;
use crate::shared::Stamp;

/// Manifests read from files (`.yaml`, `.yml`, `.json`) and directories (recursively; hidden
/// entries such as a ConfigMap volume's `..data` are skipped, the links to them followed).
#[derive(Debug)]
pub struct FileSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    /// Roots that could not be read, reported with the files' errors.
    root_errors: Vec<ConfigError>,
}

#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    manifests: Vec<Manifest>,
    errors: Vec<ConfigError>,
}

impl FileSource {
    /// A source over `roots`; nothing is read until [`FileSource::refresh`].
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self { roots, files: BTreeMap::new(), root_errors: Vec::new() }
    }

    /// Re-reads the files that changed, were added or removed. Returns whether anything did.
    ///
    /// A file that is no longer valid YAML keeps contributing what it held before, and an
    /// object that no longer parses keeps its previous version: a broken edit is reported,
    /// never turned into an outage.
    pub fn refresh(&mut self) -> bool {
        let mut root_errors = Vec::new();
        let mut seen = Vec::new();
        let mut unreadable = Vec::new();
        for root in &self.roots {
            if let Err(e) = std::fs::metadata(root) {
                let origin: Arc<str> = Arc::from(root.display().to_string());
                let held = self.files.keys().any(|path| path.starts_with(root));
                let served = if held { "; what it held before is still served" } else { "" };
                let message = format!("cannot read: {e}{served}");
                root_errors.push(ConfigError::file(&origin, message));
                unreadable.push(root);
                continue;
            }
            let walk = walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name();
            let entries =
                walk.into_iter().filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
            for entry in entries {
                match entry {
                    Ok(entry) if entry.file_type().is_file() && is_manifest(entry.path()) => {
                        let meta = entry.metadata().ok();
                        seen.push((entry.into_path(), meta));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let origin: Arc<str> = Arc::from(root.display().to_string());
                        root_errors.push(ConfigError::file(&origin, format!("cannot list: {e}")));
                    }
                }
            }
        }
        let mut changed = root_errors != self.root_errors;
        self.root_errors = root_errors;

        let before = self.files.len();
        let listed: HashSet<&PathBuf> = seen.iter().map(|(path, _)| path).collect();
        self.files.retain(|path, _| listed.contains(path) || unreadable.iter().any(|root| path.starts_with(root)));
        changed |= self.files.len() != before;
        for (path, meta) in seen {
            changed |= self.read(path, meta);
        }
        changed
    }

    /// Re-reads just `paths`, as reported by the file watcher, when each is a manifest file
    /// under a root (temporary and editor files are ignored); anything else (a directory, a
    /// ConfigMap volume's `..data` swap) falls back to [`FileSource::refresh`]. Returns whether
    /// anything changed. At 10,000 files this skips ~20 ms of listing per edit.
    pub fn refresh_paths<'p>(&mut self, paths: impl IntoIterator<Item = &'p Path>) -> bool {
        let mut targeted = Vec::new();
        for path in paths {
            let Some(relative) = self.roots.iter().find_map(|root| path.strip_prefix(root).ok()) else { continue };
            let hidden = relative.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            let known_dir = self.files.keys().any(|known| known.starts_with(path) && known != path);
            if hidden || path.is_dir() || known_dir {
                return self.refresh();
            }
            if is_manifest(path) {
                targeted.push(path.to_path_buf());
            }
        }
        let mut changed = false;
        for path in targeted {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => changed |= self.read(path, Some(meta)),
                _ => changed |= self.files.remove(&path).is_some(),
            }
        }
        changed
    }

    /// Reads one file if its stamp changed; returns whether it did.
    fn read(&mut self, path: PathBuf, meta: Option<std::fs::Metadata>) -> bool {
        let origin: Arc<str> = Arc::from(path.display().to_string());
        let meta = meta.map_or_else(|| std::fs::metadata(&path), Ok);
        let stamp = meta.map(|m| Stamp::of(&m));
        let previous = self.files.get(&path);
        if let (Ok(stamp), Some(previous)) = (&stamp, previous)
            && previous.stamp == *stamp
        {
            return false;
        }
        let text = stamp.and_then(|stamp| Ok((stamp, std::fs::read_to_string(&path)?)));
        let (stamp, text) = match text {
            Ok(read) => read,
            Err(e) => {
                // Vanished between listing and reading: the next refresh sees it gone.
                let Some(previous) = self.files.get_mut(&path) else { return false };
                previous.errors = vec![ConfigError::file(&origin, format!("cannot read: {e}"))];
                return true;
            }
        };
        let mut parsed = parse_manifests(&origin, &text);
        let old = self.files.remove(&path);
        if let Some(old) = old {
            if !parsed.readable {
                parsed.manifests = old.manifests;
                for error in &mut parsed.errors {
                    error.message.push_str("; the file's last readable version is still served");
                }
            } else {
                keep_previous_versions(&mut parsed.manifests, &mut parsed.errors, old.manifests);
            }
        }
        self.files.insert(path, FileState { stamp, manifests: parsed.manifests, errors: parsed.errors });
        true
    }

    /// Every manifest, in file order.
    pub fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        self.files.values().flat_map(|f| f.manifests.iter())
    }

    /// Every problem found reading the files.
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        self.root_errors.iter().chain(self.files.values().flat_map(|f| f.errors.iter()))
    }

    /// The directories to watch: the roots, or for a file root its directory (editors and
    /// ConfigMap volumes replace files, which ends a watch on the file itself).
    fn watch_paths(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut paths: Vec<_> = self
            .roots
            .iter()
            .map(|root| match root.is_dir() {
                true => (root.clone(), RecursiveMode::Recursive),
                false => {
                    let parent = root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    (parent.to_path_buf(), RecursiveMode::NonRecursive)
                }
            })
            .collect();
        paths.dedup();
        paths
    }
}

/// Objects that failed to parse keep their previous version, so a typo in one Ingress does not
/// drop its routes. The error says so.
fn keep_previous_versions(manifests: &mut Vec<Manifest>, errors: &mut [ConfigError], previous: Vec<Manifest>) {
    for error in errors {
        let Some(id) = &error.object else { continue };
        if manifests.iter().any(|m| m.object.id() == *id) {
            continue;
        }
        if let Some(old) = previous.iter().find(|m| m.object.id() == *id) {
            manifests.push(old.clone());
            error.message.push_str("; its previous version is still served");
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
}

/// Watches the source's files and the plugin directory, and publishes a new snapshot after
/// each burst of changes, as the reload loop batches them. The watcher lives in the returned task;
/// abort it to stop watching.
pub fn watch_files(
    source: FileSource,
    publisher: Publisher,
    debounce: Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    // `None` asks for a full rescan: the watcher lost events or could not say where.
    let (tx, changes) = mpsc::unbounded_channel::<Option<Vec<PathBuf>>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let paths = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) if event.need_rescan() || event.paths.is_empty() => None,
            Ok(event) => Some(event.paths),
            Err(_) => None,
        };
        let _ = tx.send(paths);
    })?;
    for (path, mode) in source.watch_paths() {
        watcher.watch(&path, mode)?;
    }
    if let Some(dir) = publisher.plugin_dir() {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let watched = Watched { source, _watcher: watcher, changes, pending: None };
    Ok(reload::spawn(watched, publisher, debounce))
}

/// The file source as the reload loop drives it.
struct Watched {
    source: FileSource,
    _watcher: notify::RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<Option<Vec<PathBuf>>>,
    /// The paths the batch reported; `Some(None)` when it calls for a full rescan.
    pending: Option<Option<HashSet<PathBuf>>>,
}

impl reload::Source for Watched {
    type Change = Option<Vec<PathBuf>>;

    const NAME: &'static str = "the manifest files";

    fn next(&mut self) -> impl Future<Output = Option<Self::Change>> + Send {
        self.changes.recv()
    }

    fn absorb(&mut self, change: Self::Change) -> bool {
        self.pending = match (self.pending.take(), change) {
            (None, change) => Some(change.map(HashSet::from_iter)),
            (Some(Some(mut paths)), Some(more)) => {
                paths.extend(more);
                Some(Some(paths))
            }
            _ => Some(None),
        };
        false
    }

    fn apply(&mut self, publisher: &mut Publisher) -> Option<Arc<Snapshot>> {
        let plugins = publisher.refresh_plugins();
        let manifests = match self.pending.take() {
            Some(Some(paths)) => self.source.refresh_paths(paths.iter().map(PathBuf::as_path)),
            _ => self.source.refresh(),
        };
        (plugins || manifests).then(|| {
            let publish = publisher.publish(self.source.manifests(), self.source.errors().cloned());
            tokio::runtime::Handle::current().block_on(publish)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME}\nspec: {ports: [{port: 80}]}\n";

    fn names(source: &FileSource) -> Vec<String> {
        source.manifests().map(|m| m.object.id().name).collect()
    }

    #[test]
    fn rereads_only_changes_and_keeps_last_good_versions() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, SERVICE.replace("NAME", "one")).unwrap();
        std::fs::write(dir.path().join("b.yml"), SERVICE.replace("NAME", "two")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data/hidden.yaml"), SERVICE.replace("NAME", "hidden")).unwrap();

        let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
        assert!(source.refresh());
        assert_eq!(names(&source), ["one", "two"]);
        assert!(!source.refresh(), "nothing changed");

        // Not YAML any more: the file's objects stay, with an error.
        std::fs::write(&a, "kind: [").unwrap();
        assert!(source.refresh());
        assert_eq!(names(&source), ["one", "two"]);
        let errors: Vec<String> = source.errors().map(ToString::to_string).collect();
        assert!(errors[0].contains("a.yaml: not valid YAML") && errors[0].ends_with("still served"), "{errors:?}");

        // One object broken: it keeps its previous version.
        let broken = "apiVersion: v1\nkind: Service\nmetadata: {name: one}\nspec: {ports: 80}\n";
        std::fs::write(&a, broken).unwrap();
        assert!(source.refresh());
        assert_eq!(names(&source), ["one", "two"]);
        assert!(source.errors().next().unwrap().message.ends_with("its previous version is still served"));

        std::fs::remove_file(&a).unwrap();
        assert!(source.refresh());
        assert_eq!(names(&source), ["two"]);
        assert_eq!(source.errors().count(), 0);
    }

    #[test]
    fn a_vanished_root_keeps_serving_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("manifests");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.yaml"), SERVICE.replace("NAME", "one")).unwrap();
        let mut source = FileSource::new(vec![root.clone()]);
        source.refresh();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(source.refresh());
        assert_eq!(names(&source), ["one"]);
        let message = &source.errors().next().unwrap().message;
        assert!(message.starts_with("cannot read") && message.ends_with("what it held before is still served"));
    }

    #[test]
    fn rereads_reported_paths_and_rescans_what_it_cannot_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("a.yaml"), SERVICE.replace("NAME", "one")).unwrap();
        let mut source = FileSource::new(vec![root.clone()]);
        source.refresh();

        std::fs::write(root.join("a.yaml"), SERVICE.replace("NAME", "uno")).unwrap();
        std::fs::write(root.join("b.yaml"), SERVICE.replace("NAME", "two")).unwrap();
        std::fs::write(root.join("a.yaml.swp"), "editor noise").unwrap();
        let reported = [root.join("a.yaml"), root.join("a.yaml.swp")];
        assert!(source.refresh_paths(reported.iter().map(PathBuf::as_path)));
        assert_eq!(names(&source), ["uno"], "b.yaml was not reported");

        std::fs::remove_file(root.join("a.yaml")).unwrap();
        assert!(source.refresh_paths([root.join("a.yaml").as_path()]));
        assert!(names(&source).is_empty());
        assert!(!source.refresh_paths([Path::new("/elsewhere/x.yaml")]), "outside the roots");

        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/c.yaml"), SERVICE.replace("NAME", "three")).unwrap();
        assert!(source.refresh_paths([root.join("sub").as_path()]), "a directory: full rescan");
        assert_eq!(names(&source), ["two", "three"]);
    }

    #[test]
    fn reports_missing_roots() {
        let mut source = FileSource::new(vec![PathBuf::from("/nonexistent/sluice")]);
        source.refresh();
        let error = source.errors().next().unwrap().to_string();
        assert!(error.starts_with("/nonexistent/sluice: cannot read"), "{error}");
        assert!(!error.contains("still served"), "nothing was read before: {error}");
    }
}
