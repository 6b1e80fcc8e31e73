//! Eviction's storage side: a layer keeps the chosen entries of each KV head and drops the rest.
//! A layer stored as one group whose heads all keep the same number (every uniform budget) is
//! gathered with one `index_select` of keys and one of values over `[heads * len, d]`, whatever
//! the number of heads; when its heads keep different numbers (AdaKV), the same one gather is cut
//! into one group per head. Layers already ragged go head by head.

use candle_core::{Device, Tensor};

use crate::cache::{HeadGroup, LayerKv, Storage};
use crate::MethodError;

type Result<T> = std::result::Result<T, MethodError>;

/// Flat row numbers `head * len + keep[head][i]` of a `[heads * len, d]` view, on `device`.
pub fn flat_rows(keep: &[Vec<u32>], len: usize, device: &Device) -> Result<Tensor> {
    let flat: Vec<u32> = keep
        .iter()
        .enumerate()
        .flat_map(|(h, idx)| idx.iter().map(move |&i| (h * len) as u32 + i))
        .collect();
    let n = flat.len();
    Ok(Tensor::from_vec(flat, n, device)?)
}

impl LayerKv {
    /// Keep, for each KV head, the entries at the given indices (into that head's current
    /// entries, strictly increasing). Heads that end up with equal lengths share one group;
    /// otherwise the layer becomes ragged, one group per head.
    pub fn retain(&mut self, keep: &[Vec<u32>]) -> Result<()> {
        self.check_keep(keep)?;
        let uniform = keep.iter().all(|k| k.len() == keep[0].len());
        if let [g] = self.groups.as_slice() {
            let flat = flat_rows(keep, g.len(), &g.storage.device())?;
            if uniform {
                return self.retain_rows(keep, &flat);
            }
            return self.retain_ragged_rows(keep, &flat);
        }
        // Uniform survivors of dense groups become one group; otherwise one group per head.
        // Compressed storage is rebuilt in its own form from the surviving entries.
        let mut groups = Vec::with_capacity(keep.len());
        let one_group = uniform && self.groups.iter().all(|g| g.storage.is_dense());
        let mut all_k = Vec::new();
        let mut all_v = Vec::new();
        let mut all_pos = Vec::new();
        for g in &self.groups {
            let (k, v) = g.storage.keys_values()?;
            let mut hk = Vec::with_capacity(g.n_heads());
            let mut hv = Vec::with_capacity(g.n_heads());
            let mut hp = Vec::with_capacity(g.n_heads());
            for local in 0..g.n_heads() {
                let idx = &keep[g.first_head + local];
                hk.push(select_rows(&k.get(local)?, idx)?);
                hv.push(select_rows(&v.get(local)?, idx)?);
                hp.push(
                    idx.iter()
                        .map(|&i| g.positions[local][i as usize])
                        .collect::<Vec<_>>(),
                );
            }
            if one_group {
                all_k.extend(hk);
                all_v.extend(hv);
                all_pos.extend(hp);
                continue;
            }
            for (local, ((k, v), pos)) in hk.into_iter().zip(hv).zip(hp).enumerate() {
                let (k, v) = (k.unsqueeze(0)?, v.unsqueeze(0)?);
                groups.push(HeadGroup {
                    first_head: g.first_head + local,
                    storage: Storage {
                        k: g.storage.k.encode_like(&k, local..local + 1)?,
                        v: g.storage.v.encode_like(&v, local..local + 1)?,
                    },
                    positions: vec![pos],
                });
            }
        }
        if !all_k.is_empty() {
            groups.push(HeadGroup {
                first_head: 0,
                storage: Storage::dense(Tensor::stack(&all_k, 0)?, Tensor::stack(&all_v, 0)?),
                positions: all_pos,
            });
        }
        self.groups = groups;
        Ok(())
    }

    /// [`LayerKv::retain`] of a layer stored as one group whose heads all keep `keep[0].len()`
    /// entries, given their flat row numbers (`flat_rows`) already on the cache's device.
    pub fn retain_rows(&mut self, keep: &[Vec<u32>], flat: &Tensor) -> Result<()> {
        self.check_keep(keep)?;
        let [g] = self.groups.as_slice() else {
            return Err(MethodError::Cache(format!(
                "retain_rows takes a layer stored as one group, not {}",
                self.groups.len()
            )));
        };
        let kept = keep.first().map_or(0, Vec::len);
        if keep.iter().any(|k| k.len() != kept) || flat.dims1()? != keep.len() * kept {
            return Err(MethodError::Cache(format!(
                "retain_rows needs {kept} entries kept by every head and as many flat rows, got \
                 {:?} and {}",
                keep.iter().map(Vec::len).collect::<Vec<_>>(),
                flat.dims1()?
            )));
        }
        let (k, v) = g.storage.keys_values()?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let (n, len, d) = t.dims3()?;
            if kept == 0 {
                // CUDA refuses an index_select with no indices.
                return Ok(t.narrow(1, 0, 0)?);
            }
            Ok(t.reshape((n * len, d))?
                .index_select(flat, 0)?
                .reshape((n, kept, d))?)
        };
        let heads = 0..g.n_heads();
        let group = HeadGroup {
            first_head: 0,
            storage: Storage {
                k: g.storage.k.encode_like(&pick(&k)?, heads.clone())?,
                v: g.storage.v.encode_like(&pick(&v)?, heads)?,
            },
            positions: keep
                .iter()
                .zip(&g.positions)
                .map(|(idx, pos)| idx.iter().map(|&i| pos[i as usize]).collect())
                .collect(),
        };
        self.groups = vec![group];
        Ok(())
    }

    /// [`LayerKv::retain`] of a layer stored as one group whose heads keep different numbers: one
    /// `index_select` of keys and one of values over `[heads * len, d]` for all heads, then each
    /// head's rows (a view of that one gather) become its own group, encoded in the group's form.
    fn retain_ragged_rows(&mut self, keep: &[Vec<u32>], flat: &Tensor) -> Result<()> {
        let [g] = self.groups.as_slice() else {
            return Err(MethodError::Cache(
                "retain_ragged_rows takes one group".into(),
            ));
        };
        let (k, v) = g.storage.keys_values()?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let (n, len, d) = t.dims3()?;
            let rows = t.reshape((n * len, d))?;
            if flat.dims1()? == 0 {
                // CUDA refuses an index_select with no indices.
                return Ok(rows.narrow(0, 0, 0)?);
            }
            Ok(rows.index_select(flat, 0)?)
        };
        let (all_k, all_v) = (pick(&k)?, pick(&v)?);
        let mut groups = Vec::with_capacity(keep.len());
        let mut at = 0;
        for (h, idx) in keep.iter().enumerate() {
            let m = idx.len();
            let hk = all_k.narrow(0, at, m)?.unsqueeze(0)?;
            let hv = all_v.narrow(0, at, m)?.unsqueeze(0)?;
            at += m;
            groups.push(HeadGroup {
                first_head: g.first_head + h,
                storage: Storage {
                    k: g.storage.k.encode_like(&hk, h..h + 1)?,
                    v: g.storage.v.encode_like(&hv, h..h + 1)?,
                },
                positions: vec![idx.iter().map(|&i| g.positions[h][i as usize]).collect()],
            });
        }
        self.groups = groups;
        Ok(())
    }

    /// Keep, for each query head `q` (`factor` per KV head, reading KV head `q / factor`), the
    /// entries `keep[q]` of its KV head: the layer ends up stored per query head, dense, as
    /// [`LayerKv::expand_heads`] then [`LayerKv::retain`] would leave it, from one gather over the
    /// KV heads' rows (the layer is never repeated whole). The layer must be one group; every
    /// query head keeps the same number. `flat`: the kept entries' numbers `q * len + keep[q][i]`
    /// already on the device (`device_top_k::KeptRows::flat`), if at hand.
    pub fn retain_per_query_head(
        &mut self,
        keep: &[Vec<u32>],
        flat: Option<&Tensor>,
        factor: usize,
    ) -> Result<()> {
        let [g] = self.groups.as_slice() else {
            return Err(MethodError::Cache(format!(
                "retain_per_query_head takes a layer stored as one group, not {}",
                self.groups.len()
            )));
        };
        let factor = factor.max(1);
        let (heads, len) = (g.n_heads(), g.len());
        let (rows, kept) = (keep.len(), keep.first().map_or(0, Vec::len));
        let bad = rows != heads * factor
            || flat.is_some_and(|f| f.dims1().ok() != Some(rows * kept))
            || keep.iter().any(|k| {
                k.len() != kept
                    || k.windows(2).any(|w| w[0] >= w[1])
                    || k.last().is_some_and(|&i| i as usize >= len)
            });
        if bad {
            return Err(MethodError::Cache(format!(
                "retain_per_query_head needs {} strictly increasing lists of one length below \
                 {len}, one per query head",
                heads * factor
            )));
        }
        let (k, v) = g.storage.keys_values()?;
        let dev = k.device().clone();
        // Rows of the KV heads' `[heads * len, d]` view: (q / factor) * len + i.
        let idx = match flat {
            Some(flat) => {
                let shift: Vec<u32> = (0..rows).map(|q| ((q - q / factor) * len) as u32).collect();
                let shift = Tensor::from_vec(shift, (rows, 1), &dev)?;
                flat.reshape((rows, kept))?
                    .broadcast_sub(&shift)?
                    .flatten_all()?
            }
            None => {
                let idx: Vec<u32> = keep
                    .iter()
                    .enumerate()
                    .flat_map(|(q, i)| i.iter().map(move |&i| ((q / factor) * len) as u32 + i))
                    .collect();
                Tensor::from_vec(idx, rows * kept, &dev)?
            }
        };
        let pick = |t: &Tensor| -> Result<Tensor> {
            let (n, len, d) = t.dims3()?;
            if kept == 0 {
                // CUDA refuses an index_select with no indices.
                return Ok(t.narrow(1, 0, 0)?.repeat((factor, 1, 1))?);
            }
            Ok(t.reshape((n * len, d))?
                .index_select(&idx, 0)?
                .reshape((rows, kept, d))?)
        };
        // After a prefill every head holds positions 0..len: the kept indices are the positions.
        let identity = g
            .positions
            .iter()
            .all(|p| p.iter().enumerate().all(|(i, &x)| x as usize == i));
        let positions = if identity {
            keep.to_vec()
        } else {
            keep.iter()
                .enumerate()
                .map(|(q, idx)| {
                    idx.iter()
                        .map(|&i| g.positions[q / factor][i as usize])
                        .collect()
                })
                .collect()
        };
        let group = HeadGroup {
            first_head: 0,
            storage: Storage::dense(pick(&k)?, pick(&v)?),
            positions,
        };
        self.groups = vec![group];
        Ok(())
    }

    /// One strictly increasing, in-range index list per KV head.
    fn check_keep(&self, keep: &[Vec<u32>]) -> Result<()> {
        let n_heads: usize = self.groups.iter().map(|g| g.n_heads()).sum();
        if keep.len() != n_heads {
            return Err(MethodError::Cache(format!(
                "retain got {} index lists for {n_heads} heads",
                keep.len()
            )));
        }
        for g in &self.groups {
            for local in 0..g.n_heads() {
                let h = g.first_head + local;
                let idx = &keep[h];
                let len = g.len() as u32;
                if idx.windows(2).any(|w| w[0] >= w[1]) || idx.last().is_some_and(|&i| i >= len) {
                    return Err(MethodError::Cache(format!(
                        "head {h}: kept indices must be strictly increasing and < {len}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Rows `idx` of `t` (`[len, d]`). No rows is an empty tensor: CUDA refuses an `index_select`
/// with no indices (a kernel launch of zero blocks), and a head may keep nothing of a range.
fn select_rows(t: &Tensor, idx: &[u32]) -> Result<Tensor> {
    if idx.is_empty() {
        return Ok(t.narrow(0, 0, 0)?);
    }
    Ok(t.index_select(&Tensor::new(idx, t.device())?, 0)?)
}

#[cfg(test)]
mod tests {
    use crate::testing::random_cache;

    /// Every head keeps exactly the rows it asked for, keys, values and positions, whether the
    /// layer is one group (one gather over all heads) or ragged (head by head), and whether the
    /// heads keep equal numbers or not. The oracle is each head's rows read on the host.
    #[test]
    fn kept_rows_are_the_chosen_rows_of_each_head() {
        let keeps: [Vec<Vec<u32>>; 3] = [
            vec![vec![0, 5, 9, 29], vec![1, 2, 3, 4], vec![7, 8, 28, 29]],
            vec![vec![0, 29], vec![3, 4, 5, 6, 7], vec![]],
            vec![vec![], vec![], vec![]],
        ];
        for ragged in [false, true] {
            for keep in &keeps {
                let mut cache = random_cache(ragged);
                let before: Vec<(Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<u32>)> = {
                    let layer = cache.layer(0);
                    let mut heads = Vec::new();
                    for g in layer.groups() {
                        let (k, v) = g.storage.keys_values().unwrap();
                        for h in 0..g.n_heads() {
                            heads.push((
                                k.get(h).unwrap().to_vec2().unwrap(),
                                v.get(h).unwrap().to_vec2().unwrap(),
                                g.positions[h].clone(),
                            ));
                        }
                    }
                    heads
                };
                cache.layer_mut(0).retain(keep).unwrap();
                let layer = cache.layer(0);
                let uniform = keep.iter().all(|k| k.len() == keep[0].len());
                if uniform && !ragged {
                    assert_eq!(layer.groups().len(), 1, "one group stays one group");
                }
                for g in layer.groups() {
                    let (k, v) = g.storage.keys_values().unwrap();
                    for local in 0..g.n_heads() {
                        let h = g.first_head + local;
                        let (bk, bv, bp) = &before[h];
                        let pick = |rows: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                            keep[h].iter().map(|&i| rows[i as usize].clone()).collect()
                        };
                        let got_k: Vec<Vec<f32>> = k.get(local).unwrap().to_vec2().unwrap();
                        let got_v: Vec<Vec<f32>> = v.get(local).unwrap().to_vec2().unwrap();
                        assert_eq!(got_k, pick(bk), "head {h} keys, ragged {ragged}");
                        assert_eq!(got_v, pick(bv), "head {h} values, ragged {ragged}");
                        let want_pos: Vec<u32> = keep[h].iter().map(|&i| bp[i as usize]).collect();
                        assert_eq!(g.positions[local], want_pos, "head {h} positions");
                    }
                }
            }
        }
    }

    /// Gathering per query head from the KV heads keeps what repeating the layer per query head
    /// and then retaining keeps: rows and positions, with the flat numbers given or not, and
    /// with positions that are not 0..len.
    #[test]
    fn per_query_head_gather_equals_repeat_then_retain() {
        let keep: Vec<Vec<u32>> = (0..6u32)
            .map(|q| {
                (0..5u32)
                    .map(|i| (i * 7 + q * 3) % 35 + i / 4)
                    .collect::<Vec<_>>()
            })
            .map(|mut v| {
                v.sort_unstable();
                v.dedup();
                v.truncate(4);
                v
            })
            .collect();
        assert!(keep.iter().all(|k| k.len() == 4));
        for shifted in [false, true] {
            let dev = candle_core::Device::Cpu;
            let k = candle_core::Tensor::randn(0f32, 1.0, (3, 40, 8), &dev).unwrap();
            let v = candle_core::Tensor::randn(0f32, 1.0, (3, 40, 8), &dev).unwrap();
            let mut base = crate::KvCache::new(1, 3, 8, candle_core::DType::F32, &dev);
            // Positions 2..42 (a later part of a sequence): not 0..len.
            let first = if shifted { 2 } else { 0 };
            let pos: Vec<u32> = (first..first + 40).collect();
            base.layer_mut(0).append(&k, &v, &pos).unwrap();
            let mut want = base.clone();
            want.layer_mut(0).expand_heads(2).unwrap();
            want.layer_mut(0).retain(&keep).unwrap();
            let flat = super::flat_rows(&keep, 40, &candle_core::Device::Cpu).unwrap();
            for given in [None, Some(&flat)] {
                let mut got = base.clone();
                got.layer_mut(0)
                    .retain_per_query_head(&keep, given, 2)
                    .unwrap();
                assert_eq!(got.layer(0).positions(), want.layer(0).positions());
                let rows = |c: &crate::KvCache| {
                    let (k, v) = c.layer(0).dense().unwrap();
                    (
                        k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    )
                };
                assert_eq!(rows(&got), rows(&want), "shifted {shifted}");
            }
        }
    }

    #[test]
    fn bad_index_lists_are_refused() {
        let mut cache = random_cache(false);
        let layer = cache.layer_mut(0);
        assert!(layer.retain(&[vec![1, 1], vec![0, 1], vec![0, 1]]).is_err());
        assert!(layer
            .retain(&[vec![0, 40], vec![0, 1], vec![0, 1]])
            .is_err());
        assert!(layer.retain(&[vec![0], vec![1]]).is_err());
        let flat = super::flat_rows(&[vec![0], vec![1], vec![2]], 40, &candle_core::Device::Cpu);
        assert!(layer
            .retain_rows(&[vec![0], vec![1], vec![2, 3]], &flat.unwrap())
            .is_err());
    }
}
