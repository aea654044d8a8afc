//! CRC combination (pure): the CRC of `A ‖ B` from `crc(A)`, `crc(B)` and `len(B)`, without
//! reading either again. S3's FULL_OBJECT multipart checksums are the CRC of the whole
//! object; this makes one from the parts' CRCs at CompleteMultipartUpload, as S3 does.
//!
//! It is zlib's `crc32_combine` (GF(2) matrices for "append n zero bits"), for any reflected
//! CRC up to 64 bits whose initial value equals its final XOR (CRC32, CRC32C and CRC64NVME
//! all start from and finish with all ones).

/// A reflected CRC: its reversed polynomial and width in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc {
    pub poly: u64,
    pub width: u32,
}

/// CRC-32 (ISO-HDLC): S3's CRC32.
pub const CRC32: Crc = Crc {
    poly: 0xEDB8_8320,
    width: 32,
};
/// CRC-32C (Castagnoli): S3's CRC32C.
pub const CRC32C: Crc = Crc {
    poly: 0x82F6_3B78,
    width: 32,
};
/// CRC-64/NVME: S3's CRC64NVME.
pub const CRC64NVME: Crc = Crc {
    poly: 0x9A6C_9329_AC4B_C9B5,
    width: 64,
};

fn times(mat: &[u64], mut vec: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 == 1 {
            sum ^= mat.get(i).copied().unwrap_or(0);
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn square(mat: &[u64]) -> Vec<u64> {
    mat.iter().map(|&row| times(mat, row)).collect()
}

impl Crc {
    /// The CRC of `A ‖ B`, given `crc(A)`, `crc(B)` and the length of B in bytes.
    pub fn combine(self, crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
        if len_b == 0 {
            return crc_a;
        }
        let width = self.width.clamp(1, 64) as usize;
        // The operator for one zero bit, then for 2, 4 and (first in the loop) 8 bits.
        let mut one_bit = vec![self.poly];
        one_bit.extend((0..width - 1).map(|n| 1u64 << n));
        let two = square(&one_bit);
        let mut op = square(&two);
        let mut crc = crc_a;
        let mut len = len_b;
        loop {
            op = square(&op);
            if len & 1 == 1 {
                crc = times(&op, crc);
            }
            len >>= 1;
            if len == 0 {
                break;
            }
        }
        crc ^ crc_b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc32(data: &[u8]) -> u64 {
        u64::from(crc32fast::hash(data))
    }

    fn crc32c(data: &[u8]) -> u64 {
        u64::from(crc32c::crc32c(data))
    }

    /// CRC-64/NVME bit by bit, straight from its definition (a reference for the test).
    fn crc64nvme(data: &[u8]) -> u64 {
        let mut crc = u64::MAX;
        for &b in data {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ CRC64NVME.poly
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn the_reference_crc64nvme_matches_its_check_value() {
        // The catalogue's check value for "123456789".
        assert_eq!(crc64nvme(b"123456789"), 0xAE8B_1486_0A79_9888);
    }

    #[test]
    fn combining_equals_hashing_the_concatenation() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        type Hash = fn(&[u8]) -> u64;
        let cases: [(Crc, Hash); 3] = [(CRC32, crc32), (CRC32C, crc32c), (CRC64NVME, crc64nvme)];
        for (crc, hash) in cases {
            for cut in [0, 1, 7, 8, 255, 2500, 4999, 5000] {
                let (a, b) = data.split_at(cut);
                assert_eq!(
                    crc.combine(hash(a), hash(b), b.len() as u64),
                    hash(&data),
                    "{crc:?} cut at {cut}"
                );
            }
            // Three pieces, folded left as parts are.
            let (a, rest) = data.split_at(1000);
            let (b, c) = rest.split_at(3000);
            let ab = crc.combine(hash(a), hash(b), b.len() as u64);
            assert_eq!(crc.combine(ab, hash(c), c.len() as u64), hash(&data));
        }
    }
}
