//! Certificates for the TLS tests, made by the `openssl` command (a tool
//! no one here wrote): a root CA, an intermediate CA it signs, a server
//! certificate the intermediate signs (for `localhost` and 127.0.0.1),
//! served with the intermediate as its chain, and a client certificate
//! the root signs. P-256 keys: fast to make.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Days the certificates are valid.
const DAYS: &str = "30";
/// `openssl req`'s arguments for a new P-256 key, unencrypted.
const NEW_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// The files of a test PKI, in a directory of its own.
pub struct Pki {
    /// The root CA's certificate: what clients trust.
    pub root: PathBuf,
    /// The server's certificate, then the intermediate's (`certfile`).
    pub chain: PathBuf,
    /// The server's key (`keyfile`), mode 0600.
    pub key: PathBuf,
    /// A client certificate signed by the root, and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    dir: PathBuf,
}

impl Pki {
    /// Makes the certificates in `dir`; the server's common name is `cn`
    /// (so a renewed certificate can be told from the first).
    pub fn generate(dir: &Path, cn: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let p = |name: &str| dir.join(name);
        let ca_ext = write(
            dir,
            "ca.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        let server_ext = write(
            dir,
            "server.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        let client_ext = write(
            dir,
            "client.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        let (root_key, root_pem) = (p("root.key"), p("root.pem"));
        let root = [
            "-keyout",
            s(&root_key),
            "-out",
            s(&root_pem),
            "-subj",
            "/CN=orders test root",
            "-days",
            DAYS,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        openssl(&[&["req", "-x509"], NEW_KEY, &root].concat());
        signed(
            dir,
            "inter",
            "/CN=orders test intermediate",
            "root",
            &ca_ext,
        );
        signed(dir, "server", &format!("/CN={cn}"), "inter", &server_ext);
        signed(dir, "client", "/CN=orders test client", "root", &client_ext);
        let chain = [
            std::fs::read(p("server.pem")).unwrap(),
            std::fs::read(p("inter.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(p("chain.pem"), chain).unwrap();
        set_mode(&p("server.key"), 0o600);
        Pki {
            root: p("root.pem"),
            chain: p("chain.pem"),
            key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            dir: dir.to_path_buf(),
        }
    }

    /// A file of this PKI's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes `<name>.key` and `<name>.pem`, signed by `<issuer>`.
fn signed(dir: &Path, name: &str, subject: &str, issuer: &str, ext: &Path) {
    let p = |file: String| dir.join(file);
    let (key, csr, pem) = (
        p(format!("{name}.key")),
        p(format!("{name}.csr")),
        p(format!("{name}.pem")),
    );
    let request = ["-keyout", s(&key), "-out", s(&csr), "-subj", subject];
    openssl(&[&["req"], NEW_KEY, &request].concat());
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&p(format!("{issuer}.pem"))),
        "-CAkey",
        s(&p(format!("{issuer}.key"))),
        "-CAcreateserial",
        "-out",
        s(&pem),
        "-days",
        DAYS,
        "-extfile",
        s(ext),
    ]);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Runs `openssl` with `args`; panics with its output if it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
