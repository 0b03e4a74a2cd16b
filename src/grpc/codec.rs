//! The protobuf codec of every Foghorn gRPC service and client: prost, with small starting buffers.
//!
//! tonic's default codec reserves 8 KiB to encode and 8 KiB to decode per stream. A Foghorn holds
//! one long-lived stream per edge whose frames are a few hundred bytes, so those buffers would be
//! most of what a connected edge costs. Starting at 1 KiB, the buffers still grow for large frames
//! (bounded by the service's max message size) and never shrink below what a frame needed.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per stream.
const BUFFER_BYTES: usize = 1024;
/// Bytes encoded before a streaming encoder yields to the runtime (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `ProstCodec` with [`BUFFER_BYTES`] starting buffers; named in `build.rs` as the codec path.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        CompactCodec(PhantomData)
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD))
    }
}
