//! Sibling containers and paths (research/docker-backend.md §3.4). The daemon resolves a bind
//! mount's source on *its* machine, so when the host itself runs in a container, its own paths
//! mean nothing to the daemon. Each instance container mounts `daemon_path(p)` at `p`: Factorio
//! then sees the host's own paths and the `config.ini` and command line stay valid unchanged.
//!
//! Where the daemon sees a path: `docker_data_dir` for the host's working directory if set, else
//! the source of the host container's mount that holds it (found by inspecting the host's own
//! container), else the same path (the host is not in a container).

use std::path::{Path, PathBuf};

/// Prefix rewrites from this host's filesystem to the daemon's, longest prefix first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathMap {
    /// (path here, path on the daemon's machine)
    mounts: Vec<(PathBuf, PathBuf)>,
    /// The host runs in a container: a path outside every mount does not exist for the daemon.
    contained: bool,
}

impl PathMap {
    /// No translation: the host and the daemon share a filesystem.
    pub fn same() -> PathMap {
        PathMap::default()
    }

    /// `mounts` as (path here, path on the daemon's machine); `contained` when the host runs in
    /// a container, so that unmapped paths are an error rather than a wrong mount.
    pub fn new(mut mounts: Vec<(PathBuf, PathBuf)>, contained: bool) -> PathMap {
        mounts.sort_by_key(|(inside, _)| std::cmp::Reverse(inside.components().count()));
        PathMap { mounts, contained }
    }

    pub fn is_translating(&self) -> bool {
        self.contained || !self.mounts.is_empty()
    }

    /// Where the daemon finds `p`.
    pub fn daemon_path(&self, p: &Path) -> Result<PathBuf, String> {
        for (inside, outside) in &self.mounts {
            if let Ok(rest) = p.strip_prefix(inside) {
                return Ok(if rest.as_os_str().is_empty() {
                    outside.clone()
                } else {
                    outside.join(rest)
                });
            }
        }
        if self.contained {
            return Err(format!(
                "{} is not on a volume or bind mount of this host's container, so the Docker daemon cannot mount it into Factorio's container: keep the host's data directory on a mount (or set docker_data_dir)",
                p.display()
            ));
        }
        Ok(p.to_path_buf())
    }
}

/// The id of the container this process runs in, from `/proc/self/mountinfo`: Docker bind-mounts
/// `<data-root>/containers/<id>/hostname` (and `hosts`, `resolv.conf`) into every container. This
/// works with a changed hostname, and on cgroup v1 and v2.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        line.split_whitespace().find_map(|field| {
            let (_, after) = field.split_once("/containers/")?;
            let id = after.split('/').next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_wins_and_paths_keep_their_tail() {
        let map = PathMap::new(
            vec![
                ("/home/container".into(), "/srv/host-a".into()),
                (
                    "/home/container/factorio".into(),
                    "/opt/factorio-2.0".into(),
                ),
            ],
            true,
        );
        assert_eq!(
            map.daemon_path(Path::new("/home/container/instances/east")),
            Ok(PathBuf::from("/srv/host-a/instances/east"))
        );
        assert_eq!(
            map.daemon_path(Path::new("/home/container/factorio")),
            Ok(PathBuf::from("/opt/factorio-2.0"))
        );
        assert_eq!(
            map.daemon_path(Path::new("/home/container-other/x"))
                .map_err(|_| ()),
            Err(()),
            "a sibling of a mount is not inside it"
        );
        let err = map.daemon_path(Path::new("/data/x")).unwrap_err();
        assert!(
            err.contains("/data/x") && err.contains("docker_data_dir"),
            "{err}"
        );
    }

    #[test]
    fn outside_a_container_paths_are_the_same() {
        let map = PathMap::same();
        assert!(!map.is_translating());
        assert_eq!(
            map.daemon_path(Path::new("/srv/i1")),
            Ok(PathBuf::from("/srv/i1"))
        );
    }

    #[test]
    fn the_container_id_comes_from_the_hostname_mount() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mountinfo = format!(
            "1051 1040 0:52 / / rw,relatime - fuse.fuse-overlayfs fuse-overlayfs rw\n\
             1062 1051 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(own_container_id(&mountinfo).as_deref(), Some(id));
        assert_eq!(
            own_container_id("22 1 0:21 / /proc rw - proc proc rw\n"),
            None
        );
        assert_eq!(
            own_container_id("1 2 0:1 /x/containers/short/hostname /etc/hostname rw - ext4 a rw"),
            None
        );
    }
}
