//! The gRPC contract (`proto/keyorch/v1`), generated at build time by tonic-prost-build.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("keyorch.v1");
}

/// Encoded `FileDescriptorSet` of keyorch.v1, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyorch_descriptor");
