//! `geo`: `haversine_km(lat1, lon1, lat2, lon2) -> float64`, the great-circle
//! distance in kilometres between two points given in degrees, on a sphere
//! of radius 6,371.0088 km (the Earth's mean radius). Null when any argument
//! is null.

use cutover_guest::{and_validity, export_plugin, signature, unknown_function, Args, Column, DataType, Plugin};

const EARTH_RADIUS_KM: f64 = 6371.0088;

fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

struct Geo;

impl Plugin for Geo {
    fn functions() -> Vec<cutover_guest::Signature> {
        use DataType::Float64;
        vec![signature("haversine_km", &[Float64, Float64, Float64, Float64], Float64)]
    }

    fn call(name: &str, args: Vec<Column>, rows: usize) -> Result<Column, String> {
        match name {
            "haversine_km" => {
                let (a, b, c, d) = (args.float64(0)?, args.float64(1)?, args.float64(2)?, args.float64(3)?);
                let values =
                    (0..rows).map(|i| haversine_km(a.values[i], b.values[i], c.values[i], d.values[i])).collect();
                let validity = and_validity(rows, &[a.validity, b.validity, c.validity, d.validity]);
                Ok(Column::Float64(cutover_guest::Float64Column { values, validity }))
            }
            _ => Err(unknown_function(name)),
        }
    }
}

export_plugin!(Geo);
