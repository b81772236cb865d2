import CalissonCrypto
import Foundation
import HTTPTypes
import Hummingbird
import Ledger
import LightClient
import NIOCore
import Synchronization
import Wire

/// What the Métropole and the public see, served by the gateway without a key: the
/// dashboard (server-rendered HTML, charts as inline SVG, no script, no asset from
/// elsewhere; French at /fr/, English at /en/), the open data (/open-data/v1/), and the
/// proof of every figure as JSON (/proofs/). Every figure is read like any gateway answer
/// (a checkpoint certificate of a quorum and a Merkle proof, within the freshness bound)
/// and says which checkpoint certifies it. Aggregates only: no page shows an account
/// (Docs/PRIVACY.md). Docs/DASHBOARD.md.
final class Dashboard: Sendable {
    let pool: NodePool
    let reports = ReportCache()
    let pages = PageCache()
    let limiter = PublicLimiter()
    /// Pages rendered (not from the cache) and their total bytes, for the sobriety page.
    let rendered = Mutex<(count: UInt64, bytes: UInt64)>((0, 0))

    init(pool: NodePool) { self.pool = pool }

    /// Paths served without a key (each client address rate-limited instead).
    static func isPublic(_ path: String) -> Bool {
        path == "/" || path == "/fr" || path == "/en" || path.hasPrefix("/fr/") || path.hasPrefix("/en/") || path.hasPrefix("/open-data/")
            || path.hasPrefix("/proofs/")
    }

    /// Open data and proofs: for reuse, from pages of any origin too (`ReuseCORSMiddleware`).
    static func isReusable(_ path: String) -> Bool { path.hasPrefix("/open-data/") || path.hasPrefix("/proofs/") }

    /// Registers the pages on `router`, and their paths in `routes` (a page's path with
    /// another method is then a 405, a path of no page a 404 whatever the method).
    func register(on router: Router<GatewayContext>, routes: Routes) {
        func get<Output: ResponseGenerator>(_ path: String, _ handler: @escaping @Sendable (Request, GatewayContext) async throws -> Output) {
            routes.add(method: .get, template: path)
            router.get(RouterPath(path), use: handler)
        }
        get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/fr/", .contentLanguage: "fr"]) }
        for language in Language.allCases {
            let prefix = "/\(language.rawValue)"
            get(prefix) { [self] request, _ in await page(request, language) { try await overview(language) } }
            get("\(prefix)/programmes/:programme") { [self] request, context in
                let raw = context.parameters.get("programme") ?? ""
                return await page(request, language) { try await programmePage(raw, language) }
            }
            get("\(prefix)/partners") { [self] request, _ in await page(request, language) { try await partnersPage(language) } }
            get("\(prefix)/governance") { [self] request, _ in await page(request, language) { try await governancePage(language) } }
            get("\(prefix)/validators") { [self] request, _ in await page(request, language) { try await validatorsPage(language) } }
            get("\(prefix)/sobriety") { [self] request, _ in await page(request, language) { try await sobrietyPage(language) } }
            get("\(prefix)/lookup") { [self] request, _ in
                let query = request.uri.queryParameters.get("q") ?? ""
                return await page(request, language, cached: false) { try await lookupPage(query, language) }
            }
        }
        get("/proofs/:kind") { [self] _, context in await proof(context.parameters.get("kind") ?? "", nil) }
        get("/proofs/:kind/:id") { [self] _, context in await proof(context.parameters.get("kind") ?? "", context.parameters.get("id")) }
        get("/open-data/v1/epochs/:file") { [self] _, context in await openDataReport(context.parameters.get("file") ?? "") }
        get("/open-data/v1/:file") { [self] request, context in
            await openData(context.parameters.get("file") ?? "", from: request.uri.queryParameters.get("from"), to: request.uri.queryParameters.get("to"))
        }
    }

    /// The public side's 404: a line of text, as its pages and files are not the API's.
    static func noSuchPage() -> Response {
        text(.notFound, "no such page: the dashboard is at /fr/ and /en/, the open data at /open-data/v1/ (Docs/OPEN-DATA.md)\n")
    }

    // MARK: Pages

    /// A page's title, its body (HTML, its figures' certification lines in it) and status.
    struct Page {
        var title: String
        var body: String
        var status: HTTPResponse.Status = .ok
    }

    /// A page's key in the cache: its path, not its query string (which does not make
    /// another page, and would let a client miss the cache at will), without the empty
    /// segments the router ignores (`/fr//partners` is `/fr/partners`).
    static func pageKey(_ path: String) -> String {
        Routes.canonical(path)
    }

    /// Renders (or takes from the cache) one page: the same page within
    /// `PageCache.lifetimeSeconds` is served from memory, so a crowd costs the nodes nothing more.
    func page(_ request: Request, _ language: Language, cached: Bool = true, _ render: () async throws -> Page) async -> Response {
        let key = Self.pageKey(request.uri.path)
        if cached, let hit = pages.get(key) { return Self.html(hit.body, status: hit.status, language: language) }
        let page: Page
        do { page = try await render() } catch {
            page = Page(
                title: language("Réponse non vérifiée", "No verified answer"),
                body: "<h1>\(language("Aucune réponse vérifiée", "No verified answer"))</h1><p>\(language("Aucun nœud suivi n'a donné de réponse certifiée et à jour ; rien de non vérifié n'est affiché. Réessayez dans un instant.", "No node followed gave a certified, fresh answer; nothing unverified is shown. Try again shortly."))</p><p class=\"proof\">\(HTML.escape("\(error)"))</p>",
                status: .badGateway)
        }
        let html = layout(page, language, path: request.uri.path, query: request.uri.query)
        rendered.withLock { $0 = ($0.count + 1, $0.bytes + UInt64(html.utf8.count)) }
        if cached && page.status == .ok { pages.put(key, html, status: page.status) }
        return Self.html(html, status: page.status, language: language)
    }

    static func html(_ body: String, status: HTTPResponse.Status, language: Language) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/html; charset=utf-8", .contentLanguage: language.rawValue, .cacheControl: "public, max-age=\(PageCache.lifetimeSeconds)",
                      .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// The page's frame: the navigation, the language switch, the footer.
    func layout(_ page: Page, _ language: Language, path: String, query: String?) -> String {
        let prefix = "/\(language.rawValue)"
        let links = [
            ("", language("Vue d'ensemble", "Overview")), ("/partners", language("Partenaires et compensation", "Partners and clearing")),
            ("/governance", language("Gouvernance", "Governance")), ("/validators", language("Validateurs", "Validators")),
            ("/lookup", language("Rechercher", "Look up")), ("/sobriety", language("Sobriété", "Sobriety")),
        ]
        var nav = ""
        for (suffix, label) in links {
            let target = prefix + suffix
            let current = path == target || (suffix.isEmpty && path == prefix + "/")
            nav += "<li><a href=\"\(target)\(suffix.isEmpty ? "/" : "")\"\(current ? " aria-current=\"page\"" : "")>\(label)</a></li>"
        }
        let other = language.other
        let otherPath = "/\(other.rawValue)" + path.dropFirst(prefix.count) + (query.map { "?\($0)" } ?? "")
        return """
            <!DOCTYPE html>
            <html lang="\(language.rawValue)"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
            <title>\(HTML.escape(page.title)) · Calisson</title><style>\(Self.style)</style></head>
            <body><a class="skip" href="#main">\(language("Aller au contenu", "Skip to content"))</a>
            <header><p class="brand"><a href="\(prefix)/">Calisson</a> · \(language("la monnaie d'incitation de la Métropole Aix-Marseille-Provence", "the nudge money of the Aix-Marseille-Provence Métropole"))</p>
            <nav aria-label="\(language("Navigation principale", "Main navigation"))"><ul>\(nav)</ul></nav>
            <p class="lang"><a href="\(HTML.escape(otherPath))" hreflang="\(other.rawValue)" lang="\(other.rawValue)">\(language("English", "Français"))</a></p></header>
            <main id="main">\(page.body)</main>
            <footer><p>\(language("Chaque chiffre est lu auprès des nœuds des partenaires et vérifié par la passerelle : certificat d'un quorum de validateurs et preuve de Merkle. Les liens « preuve » donnent de quoi le vérifier soi-même.", "Every figure is read from the partners' nodes and verified by the gateway: a certificate of a quorum of validators and a Merkle proof. The “proof” links give what is needed to check it yourself."))</p>
            <p>\(language("Données ouvertes sous", "Open data under")) <a href="https://www.etalab.gouv.fr/licence-ouverte-open-licence/">Licence Ouverte 2.0</a>\(language("\u{00A0}:", ":")) <a href="/open-data/v1/programmes.csv">CSV</a>, <a href="/open-data/v1/programmes.json">JSON</a>. \(language("Aucune donnée personnelle : seulement des agrégats.", "No personal data: aggregates only."))</p></footer>
            </body></html>
            """
    }

    /// Light, readable, high-contrast; dark mode follows the system.
    static let style = """
        :root{color-scheme:light dark;--fg:#1a1a1a;--bg:#fff;--muted:#4a4a4a;--link:#0a4b8c;--line:#c8c8c8;--s0:#0a5fa8;--s1:#b3470b;--s2:#2f7d32;--s3:#6b4aa0}
        @media (prefers-color-scheme:dark){:root{--fg:#f0f0f0;--bg:#151515;--muted:#c4c4c4;--link:#8cc4ff;--line:#555;--s0:#5aa9f0;--s1:#f08a4b;--s2:#6cc070;--s3:#b39ae0}}
        *{box-sizing:border-box}body{margin:0 auto;max-width:60rem;padding:0 1rem;font:1rem/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
        a{color:var(--link)}a:focus{outline:3px solid var(--link);outline-offset:2px}
        .skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:var(--bg);padding:.5rem}
        header{border-bottom:1px solid var(--line);padding:.5rem 0}.brand{margin:.25rem 0;font-weight:600}
        nav ul{list-style:none;padding:0;margin:.25rem 0;display:flex;flex-wrap:wrap;gap:.25rem 1rem}nav a[aria-current]{font-weight:700;text-decoration-thickness:3px}
        .lang{margin:.25rem 0}h1{font-size:1.6rem;line-height:1.25}h2{font-size:1.25rem;margin-top:2rem}
        .figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.75rem;margin:1rem 0}
        .figures div{border:1px solid var(--line);border-radius:.4rem;padding:.5rem .75rem}.figures dt{color:var(--muted);font-size:.9rem}.figures dd{margin:0;font-size:1.35rem;font-weight:600}
        .scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;min-width:50%}caption{text-align:left;font-weight:600;padding:.25rem 0}
        th,td{border-bottom:1px solid var(--line);padding:.3rem .6rem;text-align:left;vertical-align:top}.n{text-align:right;font-variant-numeric:tabular-nums}
        figure{margin:1rem 0}svg{width:100%;height:auto;max-height:18rem}.axis{stroke:var(--muted)}.tick{fill:var(--fg);font-size:12px}
        .s0{fill:var(--s0);background:var(--s0)}.s1{fill:var(--s1);background:var(--s1)}.s2{fill:var(--s2);background:var(--s2)}.s3{fill:var(--s3);background:var(--s3)}
        .legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem}.key{display:inline-block;width:.9rem;height:.9rem;margin-right:.35rem;vertical-align:-.1rem}
        .proof{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}footer{border-top:1px solid var(--line);margin-top:2rem;color:var(--muted);font-size:.9rem}
        label{display:block;font-weight:600}input{font:inherit;padding:.3rem;width:min(100%,36rem)}button{font:inherit;padding:.3rem .8rem;margin-top:.5rem}
        """

    /// "Certified at checkpoint N (state root …) · proof (JSON)".
    static func certified(_ found: VerifiedRecord, proof: String, _ language: Language) -> String {
        "<p class=\"proof\">\(language("Certifié au point de contrôle", "Certified at checkpoint")) \(language.number(found.record.height)) (\(language("racine d'état", "state root")) <code>\(found.record.root.hex.prefix(16))…</code>) · <a href=\"/proofs/\(proof)\">\(language("preuve (JSON)", "proof (JSON)"))</a></p>"
    }

    // MARK: Reading

    /// A record, verified; nil when proven absent.
    func read<T: WireDecodable>(_ key: StateKey, as _: T.Type = T.self) async throws -> (value: T?, found: VerifiedRecord) {
        let found = try await pool.read(key)
        return (try found.record.value.map { try T(wireBytes: $0) }, found)
    }

    /// The reports of the last `count` closed epochs before `epoch`, oldest first.
    func recentReports(before epoch: UInt64, count: UInt64) async throws -> [CertifiedReport] {
        let first = epoch > count ? epoch - count : 0
        var list: [CertifiedReport] = []
        for number in first..<epoch {
            if let report = try await reports.report(number, pool: pool) { list.append(report) }
        }
        return list
    }
}

/// An epoch report and the checkpoint it was verified at.
struct CertifiedReport: Sendable {
    let report: EpochReport
    let found: VerifiedRecord
}

/// Reports of closed epochs, verified once: a closed epoch's report never changes, so
/// the gateway keeps the newest in memory (a few kilobytes each): at most 4,096, and 64 MiB
/// (a report lists up to 4,096 programmes: the count alone let the cache grow to gigabytes).
final class ReportCache: Sendable {
    static let countMax = 4_096
    static let bytesMax = 64 << 20
    private let entries = Mutex(NewestByNumber<CertifiedReport>(countMax: countMax, bytesMax: bytesMax))

    /// The report of `epoch`, nil when the certified state proves it absent (not closed).
    func report(_ epoch: UInt64, pool: NodePool) async throws -> CertifiedReport? {
        if let hit = entries.withLock({ $0[epoch] }) { return hit }
        let found = try await pool.read(StateKeys.epochReport(epoch))
        guard let bytes = found.record.value else { return nil }
        let entry = CertifiedReport(report: try EpochReport(wireBytes: bytes), found: found)
        // Decoded, a report takes a few times its wire bytes; its proof is a few kilobytes.
        entries.withLock { $0.insert(entry, for: epoch, bytes: bytes.count * 4 + 4_096) }
        return entry
    }
}

/// Rendered pages for a short while: the same page asked again within `lifetimeSeconds`
/// is served from memory. At most `countMax` pages (the oldest dropped first).
final class PageCache: Sendable {
    static let lifetimeSeconds = 2
    static let countMax = 512
    private let entries = Mutex<[String: (body: String, status: HTTPResponse.Status, at: ContinuousClock.Instant)]>([:])

    func get(_ key: String) -> (body: String, status: HTTPResponse.Status)? {
        entries.withLock { entries in
            guard let entry = entries[key], entry.at.duration(to: .now) < .seconds(Self.lifetimeSeconds) else { return nil }
            return (entry.body, entry.status)
        }
    }

    func put(_ key: String, _ body: String, status: HTTPResponse.Status) {
        entries.withLock { entries in
            if entries.count >= Self.countMax {
                let now = ContinuousClock.now
                entries = entries.filter { $0.value.at.duration(to: now) < .seconds(Self.lifetimeSeconds) }
                if entries.count >= Self.countMax, let oldest = entries.min(by: { $0.value.at < $1.value.at })?.key { entries[oldest] = nil }
            }
            entries[key] = (body, status, .now)
        }
    }
}

/// The public side's rate limit, per client address (`clientKey`: an IPv6 /64): `rate`
/// requests a second in bursts of as many. At most `addressesMax` addresses are tracked.
/// A bucket unused for a second is full again, the same as none: those are forgotten when
/// the table is full. If none is, a new address is refused until one is: forgetting one in
/// use instead gave an attacker rotating over 4,096 addresses (a /48 has 65,536 /64s) a
/// full bucket at each request, that is no limit at all.
final class PublicLimiter: Sendable {
    static let rate = 20.0
    static let addressesMax = 4_096
    private let buckets = Mutex<[String: (tokens: Double, at: ContinuousClock.Instant)]>([:])
    /// When the full table was last looked through for unused buckets (at most every 100 ms).
    private let pruned = Mutex<ContinuousClock.Instant?>(nil)
    let refused = Atomic<UInt64>(0)

    /// nil when the request may go on, else the seconds to wait.
    func take(_ address: String, now: ContinuousClock.Instant = .now, addressesMax: Int = PublicLimiter.addressesMax) -> Int? {
        let verdict = buckets.withLock { buckets -> Int? in
            if buckets[address] == nil, buckets.count >= addressesMax {
                let due = pruned.withLock { last -> Bool in
                    guard last.map({ $0.duration(to: now) >= .milliseconds(100) }) ?? true else { return false }
                    last = now
                    return true
                }
                if due { buckets = buckets.filter { $0.value.at.duration(to: now) < .seconds(1) } }
                guard buckets.count < addressesMax else { return 1 }
            }
            var bucket = buckets[address] ?? (Self.rate, now)
            let elapsed = bucket.at.duration(to: now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket = (min(Self.rate, bucket.tokens + seconds * Self.rate), now)
            defer { buckets[address] = bucket }
            guard bucket.tokens >= 1 else { return 1 }
            bucket.tokens -= 1
            return nil
        }
        if verdict != nil { refused.add(1, ordering: .relaxed) }
        return verdict
    }
}

/// Open data and proofs are for reuse, from pages of any origin too (a reuser's chart, a
/// notebook): CORS (Hummingbird's middleware) lets a browser give them to such a page, with
/// no credentials (they need none). Put before the access rules and the request shape, so
/// that a browser's preflight (`OPTIONS`) is answered and a refusal (429, 503) carries it
/// too, its `Retry-After` readable. The dashboard's pages and the API are not opened this way.
struct ReuseCORSMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let cors = CORSMiddleware<GatewayContext>(
        allowOrigin: .all, allowHeaders: [.accept, .acceptLanguage, .cacheControl, .ifNoneMatch, .ifModifiedSince], allowMethods: [.get, .head], exposedHeaders: ["Link", "Retry-After"], maxAge: .hours(24))

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Dashboard.isReusable(Routes.canonical(request.uri.path)) else { return try await next(request, context) }
        var response = try await cors.handle(request, context: context, next: next)
        // The library exposes headers on a preflight's answer only; a simple GET needs them too.
        if request.headers[.origin] != nil, request.method != .options { response.headers[.accessControlExposeHeaders] = "Link, Retry-After" }
        return response
    }
}
