//! Just enough DER to read a certificate's subject: its Common Name
//! (`use_identity_as_username`) or the whole name in RFC 2253 form as
//! OpenSSL prints it (`use_subject_as_username`). The certificate has been
//! verified by rustls before; still, every read is bounds-checked and a
//! malformed one gives `None`.

/// One DER element: (tag, contents, what follows).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The attributes of the subject, in certificate order: per RDN, its
/// (OID, string tag, value) triples.
/// One attribute of a name: (OID, string tag, value).
type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

fn subject(der: &[u8]) -> Option<Vec<Vec<Attribute<'_>>>> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // version [0] is optional; then serial, signature, issuer, validity.
    if let (0xa0, _, after) = element(rest)? {
        rest = after;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = element(rest)? else {
        return None;
    };
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (SET, mut set, after) = element(name)? else {
            return None;
        };
        name = after;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (SEQUENCE, attribute, after) = element(set)? else {
                return None;
            };
            set = after;
            let (OID, oid, value) = element(attribute)? else {
                return None;
            };
            let (tag, value, _) = element(value)?;
            rdn.push((oid, tag, value));
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// A directory string's text: UTF8String, PrintableString, IA5String,
/// BMPString (UTF-16).
fn text(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(value.to_vec()).ok(),
        0x1e => {
            let units: Vec<u16> = value
                .chunks(2)
                .map(|c| match c {
                    [a, b] => Some(u16::from_be_bytes([*a, *b])),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

const CN: &[u8] = &[0x55, 0x04, 0x03];

/// The subject's (last) Common Name.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    subject(der)?
        .into_iter()
        .flatten()
        .rev()
        .find(|(oid, _, _)| *oid == CN)
        .and_then(|(_, tag, value)| text(tag, value))
}

fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return None,
    })
}

fn dotted(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first);
                parts.push(value - first * 40);
            } else {
                parts.push(value);
            }
            value = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn escape(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The subject as OpenSSL's `XN_FLAG_RFC2253` prints it (what Mosquitto's
/// `use_subject_as_username` uses): last RDN first, `,` between RDNs, `+`
/// within one; unknown attributes as `OID=#hex`.
pub fn subject_rfc2253(der: &[u8]) -> Option<String> {
    let rdns = subject(der)?;
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, (oid, tag, value)) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match (short_name(oid), text(*tag, value)) {
                (Some(name), Some(value)) => {
                    out.push_str(name);
                    out.push('=');
                    escape(&value, &mut out);
                }
                _ => {
                    out.push_str(&dotted(oid));
                    out.push_str("=#");
                    out.push_str(&format!("{tag:02X}"));
                    out.push_str(&format!("{:02X}", value.len()));
                    for b in *value {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_and_subject() {
        let der = cert(&[
            (rcgen::DnType::CountryName, "GB"),
            (rcgen::DnType::OrganizationName, "Ferry, Ltd"),
            (rcgen::DnType::CommonName, "sensor-7"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("sensor-7"));
        assert_eq!(
            subject_rfc2253(&der).as_deref(),
            Some("CN=sensor-7,O=Ferry\\, Ltd,C=GB")
        );
    }

    #[test]
    fn no_common_name() {
        let der = cert(&[(rcgen::DnType::OrganizationName, "x")]);
        assert_eq!(subject_common_name(&der), None);
    }

    #[test]
    fn garbage_never_panics() {
        let der = cert(&[(rcgen::DnType::CommonName, "a")]);
        for len in 0..der.len() {
            let _ = subject_rfc2253(der.get(..len).unwrap());
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(dotted(&[0x2a, 0x86, 0x48]), "1.2.840");
    }
}
