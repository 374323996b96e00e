//! Codec rows: our event codec (variant tagging + envelope) against plain serde of the same value.

use std::hint::black_box;

use cqrsx_core::{Codec, ContentType, EventCodec, Metadata};
use serde::{Deserialize, Serialize};

use super::{keep, measure, BenchRow, Scale};
use crate::cmd::Result;

/// A realistic domain event: an order line change with nested data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
enum OrderEvent {
    LineAdded {
        order_id: String,
        sku: String,
        description: String,
        quantity: u32,
        unit_price_cents: i64,
        tags: Vec<String>,
        shipping: Address,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Address {
    street: String,
    city: String,
    postcode: String,
    country: String,
}

fn sample() -> OrderEvent {
    OrderEvent::LineAdded {
        order_id: "ord-2026-11-000123".into(),
        sku: "SKU-9f8e7d6c".into(),
        description: "Stainless steel water bottle, 750 ml, matte black".into(),
        quantity: 3,
        unit_price_cents: 2_499,
        tags: vec!["kitchen".into(), "outdoor".into(), "gift".into()],
        shipping: Address {
            street: "221B Baker Street".into(),
            city: "London".into(),
            postcode: "NW1 6XE".into(),
            country: "GB".into(),
        },
    }
}

/// Encode and decode rows for JSON and MessagePack.
pub fn rows(scale: Scale) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let event = sample();
    let n = scale.codec_iterations;
    for content_type in [ContentType::Json, ContentType::MessagePack] {
        let codec = EventCodec::new(content_type);
        let encoded = codec.encode(&event, Metadata::default()).map_err(|e| e.to_string())?;
        let recorded_bytes = encoded.payload.len();
        let ours = measure(n, || {
            black_box(
                codec
                    .encode(black_box(&event), Metadata::default())
                    .map_err(|e| e.to_string())?,
            );
            Ok(())
        })?;
        let base = measure(n, || {
            black_box(content_type.encode(black_box(&event)).map_err(|e| e.to_string())?);
            Ok(())
        })?;
        let name = content_type.as_str().trim_start_matches("application/");
        keep(
            &mut rows,
            BenchRow::new(
                "codec",
                format!("encode event, {name}"),
                ours,
                &format!("serde {name} of the enum"),
                base,
            )
            .note(format!("{recorded_bytes} B payload")),
        );

        let whole = content_type.encode(&event).map_err(|e| e.to_string())?;
        let recorded = cqrsx_core::RecordedEvent {
            event_id: encoded.event_id,
            stream: cqrsx_core::StreamId::new("Order", "o-1").map_err(|e| e.to_string())?,
            version: 1,
            position: cqrsx_core::Position::START,
            event_type: encoded.event_type.clone(),
            content_type,
            schema_version: 1,
            payload: encoded.payload.clone(),
            metadata: Metadata::default(),
            recorded_at: cqrsx_core::Timestamp::now(),
        };
        let ours = measure(n, || {
            let decoded: OrderEvent = codec.decode(black_box(&recorded)).map_err(|e| e.to_string())?;
            black_box(decoded);
            Ok(())
        })?;
        let base = measure(n, || {
            let decoded: OrderEvent = content_type.decode(black_box(&whole)).map_err(|e| e.to_string())?;
            black_box(decoded);
            Ok(())
        })?;
        keep(
            &mut rows,
            BenchRow::new(
                "codec",
                format!("decode event, {name}"),
                ours,
                &format!("serde {name} of the enum"),
                base,
            ),
        );
    }
    Ok(rows)
}
