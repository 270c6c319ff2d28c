//! cutover plugins as Apache DataFusion scalar UDFs (work in progress).
