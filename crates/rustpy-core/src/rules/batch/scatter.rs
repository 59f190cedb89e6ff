//! How a call's outputs are cut back to its requests.

use crate::rules::dtype::DataType;
use crate::rules::request::element_count;

use super::row_ranges;

/// How one output of a whole-batch dict is cut back to a call's requests:
/// per request, its shape and its range of elements (C order). Rows by the
/// requests' batch rows; a `batch_output` target (`scattered`: each
/// request's shape, from its source input) by those shapes; without
/// batching, the one request gets it whole.
pub fn plan_scatter(
    output_shape: &[i64],
    rows: &[usize],
    batching: bool,
    scattered: Option<Vec<Vec<i64>>>,
) -> Vec<(Vec<i64>, std::ops::Range<usize>)> {
    if let Some(shapes) = scattered {
        let counts: Vec<usize> = shapes.iter().map(|s| element_count(s)).collect();
        return shapes.into_iter().zip(row_ranges(&counts)).collect();
    }
    if !batching || output_shape.is_empty() {
        let n = element_count(output_shape);
        return rows.iter().map(|_| (output_shape.to_vec(), 0..n)).collect();
    }
    let per_row = element_count(&output_shape[1..]);
    row_ranges(rows)
        .into_iter()
        .map(|r| {
            let mut shape = output_shape.to_vec();
            shape[0] = r.len() as i64;
            (shape, r.start * per_row..r.end * per_row)
        })
        .collect()
}

/// A tensor produced by user code, ready to be cut into per-request slices.
#[derive(Debug)]
pub struct BatchOutput<'a> {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: OutputData<'a>,
}

#[derive(Debug)]
pub enum OutputData<'a> {
    /// Fixed-size elements, C-contiguous.
    Fixed(&'a [u8]),
    /// Serialized BYTES with the byte offset where each element starts (plus
    /// the end), so rows can be sliced without re-encoding.
    Bytes {
        buf: &'a [u8],
        elem_offsets: &'a [usize],
    },
}

impl BatchOutput<'_> {
    /// Rows `rows` of this output as (shape, bytes).
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> (Vec<i64>, &[u8]) {
        let mut shape = self.shape.clone();
        if shape.is_empty() {
            return (shape, self.bytes_all());
        }
        shape[0] = rows.len() as i64;
        let per_row = element_count(&self.shape[1..]);
        let (a, b) = (rows.start * per_row, rows.end * per_row);
        match &self.data {
            OutputData::Fixed(buf) => {
                let size = self.dtype.element_size().unwrap_or(1);
                (shape, &buf[a * size..b * size])
            }
            OutputData::Bytes { buf, elem_offsets } => {
                (shape, &buf[elem_offsets[a]..elem_offsets[b]])
            }
        }
    }

    /// Elements `elems` (in C order) of this output, as bytes: the cut of a
    /// batch_output scattered by its source input's shapes.
    pub fn slice_elements(&self, elems: std::ops::Range<usize>) -> &[u8] {
        match &self.data {
            OutputData::Fixed(buf) => {
                let size = self.dtype.element_size().unwrap_or(1);
                &buf[elems.start * size..elems.end * size]
            }
            OutputData::Bytes { buf, elem_offsets } => {
                &buf[elem_offsets[elems.start]..elem_offsets[elems.end]]
            }
        }
    }

    pub fn bytes_all(&self) -> &[u8] {
        match &self.data {
            OutputData::Fixed(b) => b,
            OutputData::Bytes { buf, .. } => buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::bytes;

    #[test]
    fn plan_scatter_cuts_rows_elements_and_scattered_shapes() {
        let cuts = plan_scatter(&[3, 2], &[1, 2], true, None);
        assert_eq!(cuts, vec![(vec![1, 2], 0..2), (vec![2, 2], 2..6)]);
        let whole = plan_scatter(&[4], &[1], false, None);
        assert_eq!(whole, vec![(vec![4], 0..4)]);
        let by_input = plan_scatter(&[7], &[1, 1], true, Some(vec![vec![3], vec![4]]));
        assert_eq!(by_input, vec![(vec![3], 0..3), (vec![4], 3..7)]);
    }

    #[test]
    fn slice_rows_fixed_and_bytes() {
        let data: Vec<u8> = (0..24).collect();
        let out = BatchOutput {
            name: "Y".into(),
            dtype: DataType::Int16,
            shape: vec![3, 4],
            data: OutputData::Fixed(&data),
        };
        let (shape, bytes) = out.slice_rows(1..3);
        assert_eq!(shape, vec![2, 4]);
        assert_eq!(bytes, &data[8..24]);

        let mut buf = Vec::new();
        let mut offs = vec![0];
        for e in [&b"a"[..], b"bb", b"", b"dddd"] {
            bytes::encode_into(&mut buf, e).unwrap();
            offs.push(buf.len());
        }
        let out = BatchOutput {
            name: "S".into(),
            dtype: DataType::Bytes,
            shape: vec![2, 2],
            data: OutputData::Bytes {
                buf: &buf,
                elem_offsets: &offs,
            },
        };
        let (shape, bytes) = out.slice_rows(1..2);
        assert_eq!(shape, vec![1, 2]);
        assert_eq!(bytes::decode(bytes, 2).unwrap(), vec![&b""[..], b"dddd"]);
    }
}
