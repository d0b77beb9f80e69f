//! An image of this program, for the containers it runs itself (managed
//! scaling's agents, a standalone source's traffic container). There is
//! no registry to pull one from, so it is built from the running
//! executable and the shared libraries it has loaded, imported as a root
//! filesystem (`/reconcile`; set `LD_LIBRARY_PATH` to [`LIBRARY_PATH`]).
//! Its tag digests the executable's identity (size, modification time,
//! inode): a rebuilt binary is a new image, and finding the image again
//! does not hash hundreds of MB (a debug build's) on every run.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

/// Where the image's libraries are found.
pub const LIBRARY_PATH: &str = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64:/usr/lib64";

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The image of the running executable in repository `repo`
/// (`repo:TAG`), imported unless the engine has it already.
pub async fn build(docker: &Docker, repo: &str) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/exe").map_err(|e| err("reading the executable", e))?;
    let identity = format!(
        "{}-{}.{}-{}-{}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.dev(),
        meta.ino()
    );
    let tag = &crate::model::digest(&identity)[..12];
    let reference = format!("{repo}:{tag}");
    if docker.inspect_image(&reference).await.is_err() {
        let exe = std::fs::read("/proc/self/exe").map_err(|e| err("reading the executable", e))?;
        let tar = rootfs(exe)?;
        let mut stream = docker.create_image(
            Some(
                CreateImageOptionsBuilder::default()
                    .from_src("-")
                    .repo(repo)
                    .tag(tag)
                    .build(),
            ),
            Some(bollard::body_full(tar.into())),
            None,
        );
        while let Some(r) = stream.next().await {
            r.map_err(|e| err(&format!("importing the image {reference}"), e))?;
        }
    }
    Ok(reference)
}

/// A root filesystem (tar) holding the executable at `/reconcile` and the
/// shared libraries it needs at the paths the dynamic loader looks for
/// them, as `ldd` resolves them on this host (the loader included).
fn rootfs(exe: Vec<u8>) -> Result<Vec<u8>, String> {
    // The executable's own path: `/proc/self/exe` would name ldd's.
    let me = std::env::current_exe().map_err(|e| err("finding the executable", e))?;
    let out = std::process::Command::new("ldd")
        .arg(&me)
        .output()
        .map_err(|e| err("running ldd to find the executable's libraries", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once("=>") {
                // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`
                Some((_, rest)) => rest.split_whitespace().next().map(str::to_string),
                // `/lib64/ld-linux-x86-64.so.2 (0x...)`
                None => l.split_whitespace().next().map(str::to_string),
            }
        })
        .filter(|p| p.starts_with('/'))
        .collect();
    libs.sort();
    libs.dedup();
    if libs.is_empty() {
        return Err(format!("ldd found no libraries for the executable: {text}"));
    }
    let mut tar = Tar::default();
    tar.file("reconcile", &exe, 0o755);
    tar.dir("tmp", 0o1777);
    for lib in &libs {
        // Read through symlinks: the file lands under the name looked up.
        let data = std::fs::read(lib).map_err(|e| err(&format!("reading `{lib}`"), e))?;
        tar.file(lib.trim_start_matches('/'), &data, 0o755);
    }
    Ok(tar.finish())
}

/// Just enough of a ustar writer for a flat set of files.
#[derive(Default)]
struct Tar {
    out: Vec<u8>,
    dirs: std::collections::BTreeSet<String>,
}

impl Tar {
    fn header(&mut self, path: &str, size: usize, mode: u32, kind: u8) {
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() > 100 {
            let cut = path[..path.len() - 100]
                .rfind('/')
                .or_else(|| path.find('/'))
                .unwrap_or(0);
            (&path[..cut], &path[cut + 1..])
        } else {
            ("", path)
        };
        h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}", width = len - 1);
            h[at..at + len - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let p = prefix.as_bytes();
        h[345..345 + p.len().min(155)].copy_from_slice(&p[..p.len().min(155)]);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if self.dirs.insert(dir.to_string()) {
                self.header(&format!("{dir}/"), 0, 0o755, b'5');
            }
            at += i + 1;
        }
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        if self.dirs.insert(path.to_string()) {
            self.header(&format!("{path}/"), 0, mode, b'5');
        }
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parents(path);
        self.header(path, data.len(), mode, b'0');
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}
