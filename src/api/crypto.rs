//! keyorch.v1.CryptoService.

use tonic::{Request, Response, Status};

use super::convert::{self, required_enum};
use super::identity::principal;
use super::status::to_status;
use crate::proto::v1::{self as pb, crypto_service_server::CryptoService};
use crate::service::Services;

pub struct Crypto(pub Services);

#[tonic::async_trait]
impl CryptoService for Crypto {
    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let ciphertext = self
            .0
            .encrypt(&p, r.key_id.clone(), r.plaintext, r.aad)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EncryptResponse {
            key_id: r.key_id,
            ciphertext,
        }))
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let plaintext = self
            .0
            .decrypt(&p, r.key_id.clone(), r.ciphertext, r.aad)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DecryptResponse {
            key_id: r.key_id,
            plaintext: plaintext.to_vec(),
        }))
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let dk = self
            .0
            .generate_data_key(&p, r.key_id.clone(), r.number_of_bytes, r.aad)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            key_id: r.key_id,
            plaintext: dk.plaintext.to_vec(),
            ciphertext: dk.ciphertext,
        }))
    }

    async fn sign(
        &self,
        req: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let alg = required_enum::<pb::SigningAlgorithm>("algorithm", r.algorithm)?;
        let signature = self
            .0
            .sign(
                &p,
                r.key_id.clone(),
                r.message,
                convert::signing_algorithm(alg),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SignResponse {
            key_id: r.key_id,
            signature,
            algorithm: alg as i32,
        }))
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let alg = required_enum::<pb::SigningAlgorithm>("algorithm", r.algorithm)?;
        let valid = self
            .0
            .verify(
                &p,
                r.key_id.clone(),
                r.message,
                r.signature,
                convert::signing_algorithm(alg),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::VerifyResponse {
            key_id: r.key_id,
            signature_valid: valid,
        }))
    }

    async fn generate_mac(
        &self,
        req: Request<pb::GenerateMacRequest>,
    ) -> Result<Response<pb::GenerateMacResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let mac = self
            .0
            .generate_mac(&p, r.key_id.clone(), r.message)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GenerateMacResponse {
            key_id: r.key_id,
            mac,
        }))
    }

    async fn verify_mac(
        &self,
        req: Request<pb::VerifyMacRequest>,
    ) -> Result<Response<pb::VerifyMacResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let valid = self
            .0
            .verify_mac(&p, r.key_id.clone(), r.message, r.mac)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::VerifyMacResponse {
            key_id: r.key_id,
            mac_valid: valid,
        }))
    }

    async fn get_public_key(
        &self,
        req: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let pk = self
            .0
            .get_public_key(&p, r.key_id.clone())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetPublicKeyResponse {
            key_id: r.key_id,
            public_key_der: pk.der,
            public_key_pem: pk.pem,
            signing_algorithms: pk
                .algorithms
                .into_iter()
                .map(|a| convert::signing_algorithm_pb(a) as i32)
                .collect(),
        }))
    }
}
