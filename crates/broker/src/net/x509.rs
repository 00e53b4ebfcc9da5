//! Just enough DER to read what rustls does not tell: a certificate's
//! subject, as its Common Name (`use_identity_as_username`) or the whole
//! name in RFC 2253 form as OpenSSL prints it (`use_subject_as_username`);
//! its issuer and subject as raw names (to complete the server's chain
//! from the CA files); its validity (`disable_client_cert_date_checks`).
//! Every read is bounds-checked and a malformed certificate gives `None`.

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

/// One attribute of a name: (OID, string tag, value).
type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

/// The parts of a certificate's TBSCertificate this module reads.
struct Tbs<'a> {
    issuer: &'a [u8],
    validity: &'a [u8],
    subject: &'a [u8],
}

fn tbs(der: &[u8]) -> Option<Tbs<'_>> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // version [0] is optional; then serial, signature, issuer, validity,
    // subject.
    if let (0xa0, _, after) = element(rest)? {
        rest = after;
    }
    let mut fields = [&[][..]; 5];
    for field in &mut fields {
        let (tag, contents, after) = element(rest)?;
        if tag != SEQUENCE && tag != 0x02 {
            return None;
        }
        *field = contents;
        rest = after;
    }
    let [_, _, issuer, validity, subject] = fields;
    Some(Tbs {
        issuer,
        validity,
        subject,
    })
}

/// The issuer's and the subject's names, raw (DER contents): a certificate
/// was issued by the one whose subject is its issuer.
pub fn issuer_and_subject(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let t = tbs(der)?;
    Some((t.issuer, t.subject))
}

/// notBefore and notAfter, in seconds since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let validity = tbs(der)?.validity;
    let (tag, not_before, rest) = element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950 to 2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as RFC 5280 has them, to Unix seconds.
fn time(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        (0x18, 14) => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(60))
}

fn subject(der: &[u8]) -> Option<Vec<Vec<Attribute<'_>>>> {
    let mut name = tbs(der)?.subject;
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
    fn validity_issuer_and_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2061, 12, 31);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "self");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        // 2001-02-03 (UTCTime) and 2061-12-31 (GeneralizedTime).
        assert_eq!(validity(&der), Some((981_158_400, 2_903_212_800)));
        let (issuer, subject) = issuer_and_subject(&der).unwrap();
        assert_eq!(issuer, subject, "self-signed");
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x18, b"20000229120000Z"), Some(951_825_600));
        for bad in [
            &b"7001010000Z"[..],
            b"701301000000Z",
            b"70010100000aZ",
            b"700101000000",
        ] {
            assert_eq!(time(0x17, bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
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
