//! Snapshot serializer rows: size, encode and decode time of each format × compression on a
//! realistic aggregate state, against plain `serde_json` of the same state. These rows are how
//! the default compression was chosen.

use std::collections::BTreeMap;
use std::hint::black_box;

use cqrsx_snapshot::{Compression, Format, SnapshotSerializer};
use serde::{Deserialize, Serialize};

use super::{keep, measure, BenchRow, Scale};
use crate::cmd::Result;

/// An order aggregate after a few hundred events: lines, a customer, a status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderState {
    id: String,
    customer: Customer,
    status: String,
    lines: Vec<Line>,
    history: Vec<(u64, String, String)>,
    totals_by_category: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    id: String,
    name: String,
    email: String,
    shipping: String,
    billing: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    description: String,
    quantity: u32,
    unit_price_cents: i64,
    discount_cents: i64,
    tags: Vec<String>,
}

fn state() -> OrderState {
    let categories = ["kitchen", "outdoor", "garden", "books", "toys", "office"];
    let lines: Vec<Line> = (0..120)
        .map(|i| Line {
            sku: format!("SKU-{:08x}", i * 7919),
            description: format!(
                "Item {i}: stainless steel bottle, {} ml, colour {}",
                250 + i * 10,
                i % 9
            ),
            quantity: 1 + i % 5,
            unit_price_cents: 499 + i64::from(i) * 37,
            discount_cents: i64::from(i % 4) * 50,
            tags: vec![categories[i as usize % 6].to_string(), "gift".into()],
        })
        .collect();
    let mut totals_by_category = BTreeMap::new();
    for line in &lines {
        *totals_by_category.entry(line.tags[0].clone()).or_insert(0) +=
            line.unit_price_cents * i64::from(line.quantity);
    }
    OrderState {
        id: "ord-2026-11-000123".into(),
        customer: Customer {
            id: "cus-42".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            shipping: "221B Baker Street, London NW1 6XE, GB".into(),
            billing: "221B Baker Street, London NW1 6XE, GB".into(),
        },
        status: "Shipped".into(),
        lines,
        history: (0..80)
            .map(|i| {
                (
                    1_764_000_000_000 + i * 60_000,
                    format!("status-{}", i % 5),
                    format!("user-{}", i % 3),
                )
            })
            .collect(),
        totals_by_category,
    }
}

/// Serializer rows, including zstd levels that were candidates for the default.
pub fn rows(scale: Scale) -> Result<Vec<BenchRow>> {
    let state = state();
    let iterations = (scale.codec_iterations / 10).max(100);
    let plain = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    let base_encode = measure(iterations, || {
        black_box(serde_json::to_vec(black_box(&state)).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    let base_decode = measure(iterations, || {
        let back: OrderState = serde_json::from_slice(black_box(&plain)).map_err(|e| e.to_string())?;
        black_box(back);
        Ok(())
    })?;
    let mut candidates = SnapshotSerializer::all();
    for format in [Format::Json, Format::MessagePack] {
        for level in [1, 9] {
            candidates.push(SnapshotSerializer::new(format, Compression::Zstd { level }));
        }
    }
    let mut rows = Vec::new();
    for serializer in candidates {
        let label = match serializer.compression {
            Compression::Zstd { level } => format!("{} (level {level})", serializer.content_type()),
            _ => serializer.content_type(),
        };
        let bytes = serializer.encode(&state).map_err(|e| e.to_string())?;
        let content_type = serializer.content_type();
        let back: OrderState = SnapshotSerializer::decode(&content_type, &bytes).map_err(|e| e.to_string())?;
        if back != state {
            return Err(format!("{label} does not round-trip"));
        }
        let encode = measure(iterations, || {
            black_box(serializer.encode(black_box(&state)).map_err(|e| e.to_string())?);
            Ok(())
        })?;
        let decode = measure(iterations, || {
            let back: OrderState =
                SnapshotSerializer::decode(&content_type, black_box(&bytes)).map_err(|e| e.to_string())?;
            black_box(back);
            Ok(())
        })?;
        let size = format!(
            "{} bytes, {:.0}% of plain JSON ({} bytes)",
            bytes.len(),
            bytes.len() as f64 * 100.0 / plain.len() as f64,
            plain.len()
        );
        keep(
            &mut rows,
            BenchRow::new(
                "snapshot",
                format!("encode {label}"),
                encode,
                "serde_json::to_vec",
                base_encode,
            )
            .note(size.clone()),
        );
        keep(
            &mut rows,
            BenchRow::new(
                "snapshot",
                format!("decode {label}"),
                decode,
                "serde_json::from_slice",
                base_decode,
            )
            .note(size),
        );
    }
    Ok(rows)
}
