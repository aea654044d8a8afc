//! PutBucketCors, GetBucketCors and DeleteBucketCors: the rules are validated as AWS does
//! (`cors::validate`) and kept in the admin catalog (`bucket_settings`), for the embedded
//! and the remote store alike, since browsers reach the bucket through Pixelport's listener.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::PixelportS3;
use super::cors::{CorsError, Rule, validate};

fn from_dto(r: CORSRule) -> Rule {
    Rule {
        id: r.id,
        allowed_origins: r.allowed_origins,
        allowed_methods: r.allowed_methods,
        allowed_headers: r.allowed_headers.unwrap_or_default(),
        expose_headers: r.expose_headers.unwrap_or_default(),
        max_age_seconds: r.max_age_seconds,
    }
}

fn to_dto(r: &Rule) -> CORSRule {
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    CORSRule {
        id: r.id.clone(),
        allowed_origins: r.allowed_origins.clone(),
        allowed_methods: r.allowed_methods.clone(),
        allowed_headers: some(&r.allowed_headers),
        expose_headers: some(&r.expose_headers),
        max_age_seconds: r.max_age_seconds,
    }
}

fn refused(e: CorsError) -> S3Error {
    let code = match e {
        CorsError::NoRules | CorsError::Incomplete => S3ErrorCode::MalformedXML,
        _ => S3ErrorCode::InvalidRequest,
    };
    S3Error::with_message(code, e.to_string())
}

pub async fn put(
    s: &PixelportS3,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let rules: Vec<Rule> = req
        .input
        .cors_configuration
        .cors_rules
        .into_iter()
        .map(from_dto)
        .collect();
    validate(&rules).map_err(refused)?;
    s.buckets
        .set_cors(&bucket, Some(rules))
        .map_err(|e| super::catalog_error("CORS rules", e))?;
    tracing::info!(bucket, "bucket CORS rules set");
    Ok(S3Response::new(PutBucketCorsOutput {}))
}

pub async fn get(
    s: &PixelportS3,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    let Some(rules) = s.buckets.cors(&bucket) else {
        return Err(S3Error::with_message(
            S3ErrorCode::NoSuchCORSConfiguration,
            "The CORS configuration does not exist",
        ));
    };
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(rules.iter().map(to_dto).collect()),
    }))
}

pub async fn delete(
    s: &PixelportS3,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    let bucket = req.input.bucket;
    s.existing_bucket(&bucket, &req.extensions).await?;
    s.buckets
        .set_cors(&bucket, None)
        .map_err(|e| super::catalog_error("CORS rules", e))?;
    tracing::info!(bucket, "bucket CORS rules deleted");
    Ok(S3Response::new(DeleteBucketCorsOutput {}))
}
