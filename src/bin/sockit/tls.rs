//! The TLS flags, turned into the library's settings: `--cert`/`--key` (or the self-signed
//! certificate kept in the user's config directory) for servers, `--ca`/`--pin`/`--tls-insecure`
//! for clients. Each belongs to `tls://` endpoints only; elsewhere it is a usage error.

use std::sync::Arc;

use sockit::endpoint::Endpoint;
use sockit::tls::{ClientTls, NoStore, ServerTls, TlsError, Trust};

use crate::Usage;
use crate::cli::{TlsClientArgs, TlsServerArgs};

/// The certificate a server on `endpoint` serves: `--cert`/`--key`, or the self-signed one from
/// the config directory (made on first use). The line to print about it comes along, for the
/// caller to show after its banner: the fingerprint is what clients pin.
pub fn server(args: &TlsServerArgs, endpoint: &Endpoint) -> anyhow::Result<Option<(ServerTls, String)>> {
    if !endpoint.is_tls() {
        if args.cert.is_some() {
            return Err(Usage(format!("--cert and --key are for tls:// endpoints; {endpoint} is not one")).into());
        }
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        // Files the user named: what is wrong with them is a usage error.
        let tls = ServerTls::from_pem_files(cert, key).map_err(|e| Usage(e.to_string()))?;
        let line = format!("sockit: TLS certificate {} ({})", tls.fingerprint(), cert.display());
        return Ok(Some((tls, line)));
    }
    let dir = sockit::tls::default_store().map_err(|e| {
        let fix = match &e {
            NoStore::Unset => "set HOME (or XDG_CONFIG_HOME), or give --cert FILE --key FILE",
            NoStore::NotADirectory { var: "HOME", .. } => {
                "give --cert FILE --key FILE (or set XDG_CONFIG_HOME to a directory)"
            }
            NoStore::NotADirectory { .. } => "make it, or give --cert FILE --key FILE",
        };
        Usage(format!("no place to keep a self-signed certificate: {e}; {fix}"))
    })?;
    let made = sockit::tls::self_signed(&dir, sockit::tls::host_name().as_deref())?;
    let new = if made.created { "new, " } else { "" };
    let line =
        format!("sockit: TLS certificate {} (self-signed, {new}{})", made.tls.fingerprint(), made.cert_path.display());
    Ok(Some((made.tls, line)))
}

/// How a client checks the certificate of a server at `endpoint`: `None` for the system's
/// roots (loaded when connecting) or an endpoint that is not TLS. `--tls-insecure` warns on
/// stderr.
pub fn client(args: &TlsClientArgs, endpoint: &Endpoint) -> anyhow::Result<Option<Arc<ClientTls>>> {
    let trust = match (&args.ca, &args.pin, args.tls_insecure) {
        (Some(ca), _, _) => Some(Trust::Ca(ca.clone())),
        (_, Some(pin), _) => Some(Trust::Pin(*pin)),
        (_, _, true) => Some(Trust::Insecure),
        _ => None,
    };
    if !endpoint.is_tls() {
        if trust.is_some() {
            return Err(Usage(format!(
                "--ca, --pin and --tls-insecure are for tls:// endpoints; {endpoint} is not one"
            ))
            .into());
        }
        return Ok(None);
    }
    let Some(trust) = trust else { return Ok(None) };
    if trust == Trust::Insecure {
        note!(
            "sockit: warning: --tls-insecure: the certificate of {endpoint} is not checked; anyone in between can \
             read and change this connection"
        );
    }
    match ClientTls::new(trust) {
        Ok(tls) => Ok(Some(Arc::new(tls))),
        // A --ca file that cannot be used: the user named it.
        Err(e @ (TlsError::Read { .. } | TlsError::NoCertificate { .. })) => Err(Usage(format!("--ca: {e}")).into()),
        Err(e) => Err(e.into()),
    }
}
