//! flagd gRPC (placeholder, filled next).
