import HTTPTypes
import OpenAPIRuntime
import Synchronization

/// The paths and methods the gateway serves: the operations, as the generated code
/// registers them from openapi.yaml, the dashboard's pages and `/metrics`. It says which
/// methods a path has (`405` with `Allow` for another), or that it is none of them (`404`
/// whatever the method). Before, every path but the POST operations'
/// was said to have GET and HEAD, so `OPTIONS` or `POST` on a path that does not exist was
/// a `405` where `GET` on it was a `404`.
final class Routes: Sendable {
    /// Each registered template's segments (`{name}`, the generated code's, and `:name`, the
    /// router's, stand for any one segment) and its method.
    private let routes = Mutex<[(segments: [Substring], method: HTTPRequest.Method)]>([])

    func add(method: HTTPRequest.Method, template: String) {
        routes.withLock { $0.append((Self.segments(of: template), method)) }
    }

    /// The methods `path` has (HEAD with GET, which the router answers without the body),
    /// or nil when no route has it.
    func methods(of path: String) -> [HTTPRequest.Method]? {
        let segments = Self.segments(of: path)
        let found = routes.withLock { routes in
            routes.filter { route in Self.matches(route.segments, segments) }.map(\.method)
        }
        guard !found.isEmpty else { return nil }
        var methods: [HTTPRequest.Method] = []
        for method in found where !methods.contains(method) { methods.append(method) }
        if methods.contains(.get), !methods.contains(.head) { methods.append(.head) }
        return methods
    }

    /// The values of `path`'s placeholders by name (`{height}` in `/v1/blocks/{height}`:
    /// `height`), from the first route it matches.
    func parameters(of path: String) -> [(name: Substring, value: Substring)] {
        let segments = Self.segments(of: path)
        guard let route = routes.withLock({ routes in routes.first { Self.matches($0.segments, segments) } }) else { return [] }
        return zip(route.segments, segments).compactMap { part, segment in
            if part.first == "{", part.last == "}" { return (part.dropFirst().dropLast(), segment) }
            if part.first == ":" { return (part.dropFirst(), segment) }
            return nil
        }
    }

    static func matches(_ template: [Substring], _ segments: [Substring]) -> Bool {
        guard template.count == segments.count else { return false }
        for (part, segment) in zip(template, segments) {
            let placeholder = part.first == ":" || (part.first == "{" && part.last == "}")
            if !placeholder, part != segment { return false }
        }
        return true
    }

    /// Its non-empty segments, as the router reads it (`/v1//status/` is `/v1/status`).
    static func segments(of path: String) -> [Substring] {
        path.split(separator: "/")
    }

    /// The path the router serves for `path`: its non-empty segments. Every rule that
    /// depends on the path (the scope it needs, its body's bound, whether it is public)
    /// reads this one: the raw path, compared as a string, let `/v1/proposals/` and
    /// `//v1/votes` reach the governed operations with the `submit` scope.
    static func canonical(_ path: String) -> String {
        "/" + segments(of: path).joined(separator: "/")
    }
}

/// Registers the generated operations on `transport` and records their routes in `routes`.
struct RecordingTransport: ServerTransport {
    let transport: any ServerTransport
    let routes: Routes

    func register(
        _ handler: @Sendable @escaping (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?),
        method: HTTPRequest.Method, path: String
    ) throws {
        routes.add(method: method, template: path)
        try transport.register(handler, method: method, path: path)
    }
}
