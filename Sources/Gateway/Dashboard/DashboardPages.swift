import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Wire

/// The dashboard's pages, each from certified records (Docs/DASHBOARD.md).
extension Dashboard {
    /// Programmes listed on the overview at most (each is one more certified read).
    static let overviewProgrammesMax = 64
    /// Closed epochs the charts go back.
    static let historyEpochs: UInt64 = 12

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    func meta() async throws -> (LedgerMeta, VerifiedRecord) {
        let (meta, found) = try await read(StateKeys.meta, as: LedgerMeta.self)
        guard let meta else { throw Unavailable(description: "the certified state has no ledger record") }
        return (meta, found)
    }

    // MARK: Overview

    func overview(_ l: Language) async throws -> Page {
        let (meta, metaFound) = try await meta()
        let (parameters, _) = try await read(StateKeys.parameters, as: Parameters.self)
        let totals = meta.totals
        var body = "<h1>\(l("La monnaie d'incitation en chiffres certifiés", "The nudge money in certified figures"))</h1>"
        body += "<p>\(l("Des partenaires labellisés récompensent les gestes citoyens (mobilité douce, tri, culture, énergie) en jetons, que les habitants dépensent chez les partenaires. Le registre, tenu ensemble par les partenaires, compte chaque attribution et chaque dépense et compense ce que les partenaires se doivent.", "Labelled partners reward civic gestures (soft mobility, sorting, culture, energy) with tokens that residents spend at partners. The ledger, kept together by the partners, counts every attribution and every spending and nets what partners owe each other."))</p>"
        body += "<h2>\(l("Jetons", "Tokens"))</h2>"
        body += HTML.figures([
            (l("En circulation", "In circulation"), l.number(totals.live)), (l("Émis depuis le début", "Issued since the start"), l.number(totals.issued)),
            (l("Dépensés chez les partenaires", "Spent at partners"), l.number(totals.redeemed)), (l("Expirés", "Expired"), l.number(totals.expired)),
            (l("Fondus (fonds commun)", "Melted (community fund)"), l.number(totals.sunk)),
        ])
        body += Chart.stacked(id: "supply", title: l("Devenir des jetons émis", "What became of the tokens issued"), parts: [
            (l("en circulation", "in circulation"), 0, totals.live), (l("dépensés", "spent"), 1, totals.redeemed),
            (l("expirés", "expired"), 2, totals.expired), (l("fondus", "melted"), 3, totals.sunk),
        ], language: l)
        body += Self.certified(metaFound, proof: "supply", l)

        body += "<h2>\(l("Période en cours", "Current period"))</h2>"
        var current = [(l("Période (époque) n°", "Period (epoch) no."), l.number(meta.epoch)), (l("Bloc", "Block"), l.number(meta.height))]
        if let parameters {
            current.append((l("Blocs par période", "Blocks per period"), l.number(parameters.epochLength)))
            current.append((l("Valeur d'un jeton", "Value of a token"), parameters.tokenValueMicroEuros == 0 ? l("non fixée", "not set") : Self.euros(microEuros: parameters.tokenValueMicroEuros, l)))
        }
        body += HTML.figures(current)

        let history = try await recentReports(before: meta.epoch, count: Self.historyEpochs)
        if !history.isEmpty {
            body += "<h2>\(l("Par période", "By period"))</h2>"
            let labels = history.map { "\($0.report.epoch)" }
            let issued = history.map { $0.report.programmes.reduce(UInt64(0)) { $0 + $1.figures.issued } }
            let redeemed = history.map { $0.report.programmes.reduce(UInt64(0)) { $0 + $1.figures.redeemed } }
            body += Chart.bars(
                id: "history", title: l("Jetons émis et dépensés par période", "Tokens issued and spent per period"),
                description: l("Les \(history.count) dernières périodes closes ; le tableau suivant donne les valeurs.", "The last \(history.count) closed periods; the table below gives the values."),
                labels: labels, series: [.init(name: l("émis", "issued"), style: 0, values: issued), .init(name: l("dépensés", "spent"), style: 1, values: redeemed)],
                language: l)
            body += HTML.table(
                l("Jetons émis et dépensés par période close", "Tokens issued and spent per closed period"), [l("Période", "Period"), l("Émis", "Issued"), l("Dépensés", "Spent"), l("Preuve", "Proof")],
                history.indices.map { index in
                    ["\(history[index].report.epoch)", l.number(issued[index]), l.number(redeemed[index]),
                     "<a href=\"/proofs/epoch-report/\(history[index].report.epoch)\">\(l("rapport certifié au point", "report certified at checkpoint")) \(history[index].found.record.height)</a>"]
                }, numeric: [1, 2])
        }

        body += "<h2>\(l("Programmes", "Programmes"))</h2>"
        var rows: [[String]] = []
        for id in meta.programmes.prefix(Self.overviewProgrammesMax) {
            guard let programme = try await read(StateKeys.programme(id), as: Programme.self).value else { continue }
            rows.append([
                "<a href=\"/\(l.rawValue)/programmes/\(id)\">\(HTML.escape(programme.name))</a>", l.category(programme.category), l.number(programme.totals.issued),
                l.number(programme.budget), l.percent(programme.totals.issued, of: programme.budget),
                programme.status == .active ? l("ouvert", "open") : l("clos", "closed"),
            ])
        }
        body += HTML.table(
            l("Programmes : budget consommé", "Programmes: budget used"),
            [l("Programme", "Programme"), l("Catégorie", "Category"), l("Émis", "Issued"), l("Budget", "Budget"), l("Consommé", "Used"), l("État", "Status")], rows,
            numeric: [2, 3, 4])
        if meta.programmes.count > Self.overviewProgrammesMax {
            body += "<p>\(l("Les \(Self.overviewProgrammesMax) premiers programmes sont listés ; les données ouvertes les donnent tous.", "The first \(Self.overviewProgrammesMax) programmes are listed; the open data gives them all."))</p>"
        }
        return Page(title: l("Vue d'ensemble", "Overview"), body: body)
    }

    static func euros(microEuros: UInt64, _ l: Language) -> String {
        // Micro-euros as euros with as many decimals as needed (at most 6).
        var fraction = "\(microEuros % 1_000_000)"
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.count > 2 && fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(l.number(microEuros / 1_000_000))\(l(",", "."))\(fraction)\u{00A0}€"
    }

    // MARK: A programme

    func programmePage(_ raw: String, _ l: Language) async throws -> Page {
        guard let id = Identifier(raw) else {
            return Page(title: l("Programme inconnu", "Unknown programme"), body: "<h1>\(l("Programme inconnu", "Unknown programme"))</h1><p>\(l("Un identifiant de programme est fait de 1 à 32 caractères a-z, 0-9 et « - ».", "A programme identifier is 1 to 32 characters of a-z, 0-9 and '-'."))</p>", status: .notFound)
        }
        let (programme, found) = try await read(StateKeys.programme(id), as: Programme.self)
        guard let programme else {
            return Page(title: l("Programme inconnu", "Unknown programme"), body: "<h1>\(l("Programme inconnu", "Unknown programme"))</h1><p>\(l("L'état certifié prouve qu'aucun programme ne porte cet identifiant.", "The certified state proves no programme has this identifier."))</p>" + Self.certified(found, proof: "programme/\(id)", l), status: .notFound)
        }
        let (meta, _) = try await meta()
        var body = "<h1>\(HTML.escape(programme.name))</h1>"
        let lifetime: String
        switch programme.lifetime {
        case let .expiry(epochs): lifetime = l("expirent après \(epochs) période(s)", "expire after \(epochs) period(s)")
        case let .demurrage(basisPoints): lifetime = l("fondent de \(l.percent(UInt64(basisPoints), of: 10_000)) par période", "melt by \(l.percent(UInt64(basisPoints), of: 10_000)) a period")
        }
        body += HTML.figures([
            (l("Catégorie", "Category"), l.category(programme.category)), (l("Financé par", "Funded by"), HTML.escape(programme.sponsor.rawValue)),
            (l("Récompense par geste", "Reward per gesture"), l.number(programme.rewardPerUnit)), (l("Budget", "Budget"), l.number(programme.budget)),
            (l("Émis", "Issued"), l.number(programme.totals.issued)), (l("Budget restant", "Budget left"), l.number(programme.budget - min(programme.budget, programme.totals.issued))),
            (l("Dépensés", "Spent"), l.number(programme.totals.redeemed)), (l("Jetons", "Tokens"), lifetime),
        ])
        body += Chart.stacked(id: "budget", title: l("Consommation du budget", "Budget used"), parts: [
            (l("émis", "issued"), 0, min(programme.totals.issued, programme.budget)),
            (l("restant", "left"), 2, programme.budget - min(programme.budget, programme.totals.issued)),
        ], language: l)
        body += Self.certified(found, proof: "programme/\(id)", l)
        let history = try await recentReports(before: meta.epoch, count: Self.historyEpochs * 2).compactMap { entry in
            entry.report.programmes.first { $0.programme == id }.map { (entry, $0) }
        }
        if !history.isEmpty {
            body += "<h2>\(l("Historique par période", "History by period"))</h2>"
            let active = history.contains { $0.1.figures.issued > 0 || $0.1.figures.redeemed > 0 }
            if !active { body += "<p>\(l("Ni émission ni dépense sur ces périodes.", "Nothing issued or spent in these periods."))</p>" }
            if active { body += Chart.bars(
                id: "programme-history", title: l("\(programme.name) : jetons émis et dépensés par période", "\(programme.name): tokens issued and spent per period"),
                description: l("Le tableau suivant donne les valeurs.", "The table below gives the values."),
                labels: history.map { "\($0.0.report.epoch)" },
                series: [.init(name: l("émis", "issued"), style: 0, values: history.map(\.1.figures.issued)),
                         .init(name: l("dépensés", "spent"), style: 1, values: history.map(\.1.figures.redeemed))],
                language: l) }
            body += HTML.table(
                l("Par période close", "By closed period"),
                [l("Période", "Period"), l("Gestes", "Gestures"), l("Attributions", "Attributions"), l("Émis", "Issued"), l("Dépensés", "Spent"),
                 l("Expirés", "Expired"), l("Fondus", "Melted"), l("Budget restant", "Budget left"), l("Preuve", "Proof")],
                history.map { entry, figures in
                    ["\(entry.report.epoch)", l.number(figures.figures.units), l.number(figures.figures.attributions), l.number(figures.figures.issued),
                     l.number(figures.figures.redeemed), l.number(figures.figures.expired), l.number(figures.figures.sunk), l.number(figures.budgetLeft),
                     "<a href=\"/proofs/epoch-report/\(entry.report.epoch)\">\(l("point", "checkpoint")) \(entry.found.record.height)</a>"]
                }, numeric: [1, 2, 3, 4, 5, 6, 7])
        }
        return Page(title: programme.name, body: body)
    }

    // MARK: Partners and clearing

    func partnersPage(_ l: Language) async throws -> Page {
        let (meta, metaFound) = try await meta()
        var body = "<h1>\(l("Partenaires et compensation", "Partners and clearing"))</h1>"
        var rows: [[String]] = []
        for id in meta.partners {
            guard let partner = try await read(StateKeys.partner(id), as: Partner.self).value else { continue }
            let roles = [(Roles.issuer, l("émetteur", "issuer")), (.acceptor, l("accepteur", "acceptor")), (.validator, l("validateur", "validator")), (.authority, l("autorité", "authority"))]
                .filter { partner.roles.contains($0.0) }.map(\.1).joined(separator: ", ")
            let status: String
            switch partner.status {
            case .active: status = l("actif", "active")
            case .suspended: status = l("suspendu", "suspended")
            case .removed: status = l("retiré", "removed")
            }
            rows.append(["<a href=\"/proofs/partner/\(id)\">\(HTML.escape(id.rawValue))</a>", HTML.escape(partner.name), roles, status])
        }
        body += HTML.table(l("Les partenaires", "The partners"), [l("Identifiant", "Identifier"), l("Nom", "Name"), l("Rôles", "Roles"), l("État", "Status")], rows)
        body += Self.certified(metaFound, proof: "supply", l)

        let history = try await recentReports(before: meta.epoch, count: 6)
        if let latest = history.last {
            let report = latest.report
            body += "<h2>\(l("Compensation de la période \(report.epoch)", "Clearing of period \(report.epoch)"))</h2>"
            body += "<p>\(l("Solde net de chaque partenaire : positif, la Métropole lui verse ce montant ; négatif, il le verse à la Métropole (contrepartie centrale). Les soldes s'annulent.", "Each partner's net: positive, the Métropole pays it that amount; negative, it pays the Métropole (central counterparty). The nets sum to zero."))</p>"
            let moving = report.nets.filter { $0.net != 0 }
            if !moving.isEmpty {
                body += Chart.bars(
                    id: "nets", title: l("Soldes nets de la période \(report.epoch), en jetons", "Nets of period \(report.epoch), in tokens"),
                    description: l("Barres bleues : reçoit ; barres orange : verse. Le tableau suivant donne les valeurs.", "Blue bars: receives; orange bars: pays. The table below gives the values."),
                    labels: moving.map(\.partner.rawValue),
                    series: [.init(name: l("reçoit", "receives"), style: 0, values: moving.map { $0.net > 0 ? $0.net.magnitude : 0 }),
                             .init(name: l("verse", "pays"), style: 1, values: moving.map { $0.net < 0 ? $0.net.magnitude : 0 })],
                    language: l)
            }
            let epochs = history.map(\.report.epoch)
            let netRows = meta.partners.map { id in
                [HTML.escape(id.rawValue)] + history.map { entry in l.number(entry.report.nets.first { $0.partner == id }?.net ?? 0) }
            }
            body += HTML.table(
                l("Soldes nets par période (jetons)", "Nets per period (tokens)"), [l("Partenaire", "Partner")] + epochs.map { l("Période \($0)", "Period \($0)") }, netRows,
                numeric: Set(1...max(1, epochs.count)))
            body += HTML.table(
                l("Dépenses chez chaque accepteur, période \(report.epoch)", "Spending at each acceptor, period \(report.epoch)"),
                [l("Accepteur", "Acceptor"), l("Dépenses", "Redemptions"), l("Jetons", "Tokens")],
                report.acceptors.map { [HTML.escape($0.acceptor.rawValue), l.number($0.redemptions), l.number($0.amount)] }, numeric: [1, 2])
            body += Self.certified(latest.found, proof: "epoch-report/\(report.epoch)", l)
        } else {
            body += "<p>\(l("Aucune période n'est encore close : pas de compensation à montrer.", "No period has closed yet: no clearing to show."))</p>"
        }
        return Page(title: l("Partenaires et compensation", "Partners and clearing"), body: body)
    }

    // MARK: Governance

    static let governanceProposalsMax: UInt64 = 20

    func governancePage(_ l: Language) async throws -> Page {
        let (meta, metaFound) = try await meta()
        let (parameters, _) = try await read(StateKeys.parameters, as: Parameters.self)
        let fraction = parameters.map { "\($0.approvalNumerator)/\($0.approvalDenominator)" } ?? "?"
        var body = "<h1>\(l("Gouvernance", "Governance"))</h1><p>\(l("Les partenaires fixent les règles par propositions et votes ; une proposition passe avec les voix de \(fraction) des partenaires actifs (un paramètre que la gouvernance fixe aussi), et le registre applique alors la décision.", "Partners set the rules by proposals and votes; a proposal passes with the votes of \(fraction) of the active partners (a parameter governance sets too), and the ledger then applies the decision."))</p>"
        var rows: [[String]] = []
        let last = meta.nextProposal > 0 ? meta.nextProposal - 1 : 0
        var number = last
        while number >= 1 && last - number < Self.governanceProposalsMax {
            if let proposal = try await read(StateKeys.proposal(number), as: Proposal.self).value {
                let status: String
                switch proposal.status {
                case .open: status = proposal.deadline < meta.height ? l("expirée", "expired") : l("ouverte jusqu'au bloc \(l.number(proposal.deadline))", "open until block \(l.number(proposal.deadline))")
                case let .passed(height): status = l("adoptée au bloc \(l.number(height))", "passed at block \(l.number(height))")
                case let .rejected(height): status = l("rejetée au bloc \(l.number(height))", "rejected at block \(l.number(height))")
                case let .failed(height, reason): status = l("adoptée mais sans effet au bloc \(l.number(height)) : ", "passed but without effect at block \(l.number(height)): ") + HTML.escape(reason)
                }
                rows.append(["<a href=\"/proofs/proposal/\(number)\">n° \(number)</a>", HTML.escape(proposal.proposer.rawValue), Self.action(proposal.action, l), status,
                             l.number(proposal.yes.count), l.number(proposal.no.count)])
            }
            number -= 1
        }
        body += rows.isEmpty ? "<p>\(l("Aucune proposition pour l'instant.", "No proposal yet."))</p>" : HTML.table(
            l("Les dernières propositions", "The latest proposals"), [l("Proposition", "Proposal"), l("Par", "By"), l("Objet", "Subject"), l("État", "Status"), l("Pour", "Yes"), l("Contre", "No")],
            rows, numeric: [4, 5])
        body += Self.certified(metaFound, proof: "supply", l)
        return Page(title: l("Gouvernance", "Governance"), body: body)
    }

    static func action(_ action: GovernanceAction, _ l: Language) -> String {
        switch action {
        case let .admitPartner(partner, _): return l("admettre le partenaire ", "admit partner ") + HTML.escape("\(partner.id) (\(partner.name))")
        case let .setPartnerStatus(id, status): return l("passer \(HTML.escape(id.rawValue)) à l'état \(status)", "set \(HTML.escape(id.rawValue)) to \(status)")
        case let .rotateKeys(id, _, _, _): return l("changer les clés de ", "rotate the keys of ") + HTML.escape(id.rawValue)
        case let .createProgramme(programme): return l("créer le programme ", "create programme ") + HTML.escape(programme.name)
        case let .amendProgramme(programme): return l("modifier le programme ", "amend programme ") + HTML.escape(programme.name)
        case let .closeProgramme(id): return l("clore le programme ", "close programme ") + HTML.escape(id.rawValue)
        case let .setValidators(ids): return l("validateurs : ", "validators: ") + HTML.escape(ids.map(\.rawValue).joined(separator: ", "))
        case let .setParameters(p):
            // Every parameter the vote sets (the action names them all): an approval or a sink
            // changed beside the period must be seen by the public and the voters.
            let sink = HTML.escape(p.sink.rawValue), token = euros(microEuros: p.tokenValueMicroEuros, l)
            return l("paramètres (période de \(l.number(p.epochLength)) blocs, journée de \(l.number(p.blocksPerDay)) blocs, "
                         + "approbation \(p.approvalNumerator)/\(p.approvalDenominator) des partenaires actifs, puits \(sink), valeur du jeton \(token), "
                         + "durée de vie d'une transaction \(l.number(p.transactionLifetimeMax)) blocs, d'une proposition \(l.number(p.proposalLifetimeMax)) blocs)",
                     "parameters (periods of \(l.number(p.epochLength)) blocks, days of \(l.number(p.blocksPerDay)) blocks, "
                         + "approval \(p.approvalNumerator)/\(p.approvalDenominator) of the active partners, sink \(sink), token value \(token), "
                         + "transaction lifetime \(l.number(p.transactionLifetimeMax)) blocks, proposal lifetime \(l.number(p.proposalLifetimeMax)) blocks)")
        case let .scheduleUpgrade(upgrade):
            return l("mise à niveau \(HTML.escape(upgrade.name.rawValue)) : règles \(upgrade.rules) à partir du bloc \(l.number(upgrade.height))",
                     "upgrade \(HTML.escape(upgrade.name.rawValue)): rules \(upgrade.rules) from block \(l.number(upgrade.height))")
        case let .setPartnerCategory(id, category):
            return l("catégorie de \(HTML.escape(id.rawValue)) : ", "category of \(HTML.escape(id.rawValue)): ") + (category.map { l.category($0) } ?? l("aucune", "none"))
        case let .setProgrammeAcceptance(id, categories):
            let names = categories.isEmpty ? l("aucune", "none") : categories.map { l.category($0) }.joined(separator: ", ")
            return l("programme \(HTML.escape(id.rawValue)) accepté par catégorie : ", "programme \(HTML.escape(id.rawValue)) accepted by category: ") + names
        case let .setEquivocationPolicy(suspend):
            return suspend ? l("suspendre d'office un validateur pris à signer double", "suspend at once a validator caught signing twice")
                : l("laisser aux partenaires la suite d'une double signature", "leave to the partners what follows a double signature")
        case let .cancelUpgrade(name):
            return l("annuler la mise à niveau ", "cancel upgrade ") + HTML.escape(name.rawValue)
        case let .setPartnerEndpoints(id, endpoints):
            let listed = endpoints.isEmpty ? l("aucune", "none") : HTML.escape(endpoints.map(\.description).joined(separator: ", "))
            return l("adresses du nœud de \(HTML.escape(id.rawValue)) : ", "node addresses of \(HTML.escape(id.rawValue)): ") + listed
        }
    }

    // MARK: Validators

    func validatorsPage(_ l: Language) async throws -> Page {
        let (meta, metaFound) = try await meta()
        let (keys, _) = try await read(StateKeys.validatorKeys, as: ValidatorKeys.self)
        var body = "<h1>\(l("Validateurs et santé du réseau", "Validators and network health"))</h1>"
        body += "<p>\(l("Chaque validateur est un partenaire qui fait tourner un nœud ; un bloc est final quand plus des deux tiers l'ont signé.", "Each validator is a partner running a node; a block is final when more than two thirds have signed it."))</p>"
        let paired = keys.map { $0.keys.count == meta.validators.count } ?? false
        body += HTML.table(
            l("Validateurs en fonction", "Validators in force"), [l("Partenaire", "Partner"), l("Clé de nœud", "Node key")],
            meta.validators.enumerated().map { index, id in
                [HTML.escape(id.rawValue), paired ? "<code>\(keys!.keys[index].bytes.hex.prefix(16))…</code>" : "—"]
            })
        body += Self.certified(metaFound, proof: "validator-keys", l)
        let newest = pool.newestCertifiedHeight
        let statuses = pool.nodeStatuses
        body += "<h2>\(l("Nœuds suivis par cette passerelle", "Nodes this gateway follows"))</h2>"
        body += HTML.table(
            l("État des nœuds (dernier relevé, toutes les 2 s)", "Node state (last reading, every 2 s)"),
            [l("Nœud", "Node"), l("Partenaire", "Partner"), l("Joignable", "Reachable"), l("Bloc", "Block"), l("Dernier point certifié", "Last certified checkpoint"), l("Liens", "Links")],
            pool.nodeStates.enumerated().map { index, node in
                let status = statuses[index].status
                return [HTML.escape(node.address.description), HTML.escape(status?.partner ?? "—"), node.error == nil && node.height != nil ? l("oui", "yes") : l("non", "no"),
                        node.height.map { l.number($0) } ?? "—", node.certifiedHeight.map { l.number($0) } ?? "—", status.map { l.number($0.peers.count) } ?? "—"]
            }, numeric: [3, 4, 5])
        body += "<p>\(l("Point de contrôle certifié le plus récent connu : ", "Newest certified checkpoint known: "))\(l.number(newest)).</p>"
        return Page(title: l("Validateurs", "Validators"), body: body)
    }

    // MARK: Lookup

    func lookupPage(_ query: String, _ l: Language) async throws -> Page {
        let trimmed = query.trimmingCharacters(in: .whitespaces)
        var body = "<h1>\(l("Rechercher une transaction ou un bloc", "Look up a transaction or a block"))</h1>"
        body += "<form method=\"get\" action=\"/\(l.rawValue)/lookup\"><label for=\"q\">\(l("Identifiant de transaction (64 chiffres hexadécimaux) ou numéro de bloc", "Transaction id (64 hexadecimal digits) or block number"))</label>"
        body += "<input id=\"q\" name=\"q\" value=\"\(HTML.escape(String(trimmed.prefix(80))))\" autocomplete=\"off\" spellcheck=\"false\"><br><button type=\"submit\">\(l("Rechercher", "Look up"))</button></form>"
        guard !trimmed.isEmpty else { return Page(title: l("Rechercher", "Look up"), body: body) }
        body += "<h2>\(l("Résultat", "Result"))</h2>"
        if let id = Bytes32(hex: trimmed.lowercased()) {
            // Its result proven by the certified state when a checkpoint covers its block (the
            // inclusion proof alone proves the place, not the result: the node's word).
            if let found = try await pool.result(of: id) {
                let location = found.result.location
                body += HTML.figures([
                    (l("Bloc", "Block"), "<a href=\"/\(l.rawValue)/lookup?q=\(location.height)\">\(l.number(location.height))</a>"),
                    (l("Position", "Position"), l.number(location.position)),
                    (l("Résultat", "Result"), location.applied ? l("appliquée", "applied") : l("refusée", "refused") + (location.reason.map { " : " + HTML.escape($0) } ?? "")),
                ])
                body += "<p class=\"proof\">\(l("Inclusion vérifiée : preuve de Merkle sous un bloc dont le certificat de validation a été signé par un quorum des validateurs en fonction (nœud", "Inclusion verified: a Merkle proof under a block whose commit certificate a quorum of the validators in force signed (node")) \(HTML.escape(found.source))). "
                if case let .certified(checkpoint, _, _) = found.result.certification {
                    body += "\(l("Résultat vérifié : celui que le bloc a inscrit dans l'état certifié au point", "Result verified: the one the block committed to the state certified at checkpoint")) \(l.number(checkpoint)). "
                } else {
                    body += "\(l("Résultat non vérifié : c'est la parole du nœud (aucun point certifié ne couvre encore ce bloc, il a été exécuté sous des règles qui n'inscrivaient pas les résultats, ou cette copie a été refusée pour un nonce déjà utilisé, par elle ou une autre).", "Result not verified: it is the node's word (no certified checkpoint covers the block yet, it ran under rules that did not commit results, or this copy was refused for a nonce used, by itself or another).")) "
                }
                body += "\(l("Le contenu de la transaction n'est pas affiché : aucun compte sur les pages publiques.", "The transaction's content is not shown: no account on public pages."))</p>"
            } else {
                body += "<p>\(l("Aucun nœud suivi ne connaît cette transaction comme finale.", "No node followed knows this transaction as final."))</p>"
            }
        } else if let height = UInt64(trimmed), height >= 1 {
            if let found = try await pool.blockContents(height) {
                // The results and the close as the certified state confirms them, when a
                // checkpoint covers the block (the commit certificate covers its transactions only).
                let certified = try? await pool.certifiedBlockContents(height)
                let contents = certified?.found.contents ?? found.contents
                let applied = contents.results.filter(StoreAnswers.isApplied).count
                var items = [(l("Bloc", "Block"), l.number(height)), (l("Transactions", "Transactions"), l.number(found.block.commands.count)),
                             (l("Appliquées", "Applied"), l.number(applied))]
                if let epoch = contents.closedEpoch { items.append((l("Clôt la période", "Closes period"), l.number(epoch))) }
                body += HTML.figures(items)
                body += "<p class=\"proof\">\(l("Certificat de validation vérifié (signé par un quorum des validateurs en fonction), nœud", "Commit certificate verified (signed by a quorum of the validators in force), node")) \(HTML.escape(certified?.found.source ?? found.source)). "
                if let certified, certified.reasons != nil {
                    body += "\(l("Résultats vérifiés : ceux que le bloc a inscrits dans l'état certifié au point", "Results verified: those the block committed to the state certified at checkpoint")) \(l.number(certified.checkpoint)).</p>"
                } else {
                    body += "\(l("Résultats et clôture non vérifiés : c'est la parole du nœud (aucun point certifié ne couvre encore ce bloc, ou il a été exécuté sous des règles qui n'inscrivaient pas les résultats).", "Results and close not verified: the node's word (no certified checkpoint covers the block yet, or it ran under rules that did not commit results).")) </p>"
                }
            } else {
                body += "<p>\(l("Ce bloc n'est pas (encore) final sur les nœuds suivis, ou son contenu a été élagué.", "This block is not (yet) final on the nodes followed, or its body was pruned."))</p>"
            }
        } else {
            body += "<p role=\"alert\">\(l("Ce n'est ni un identifiant de transaction (64 chiffres hexadécimaux) ni un numéro de bloc.", "This is neither a transaction id (64 hexadecimal digits) nor a block number."))</p>"
        }
        return Page(title: l("Rechercher", "Look up"), body: body)
    }

    // MARK: Sobriety

    /// The energy model: a busy server core draws about 10 W beyond idle, and a data
    /// centre's overhead (PUE) multiplies that by 1.5. Stated on the page.
    static let wattsPerCore = 10.0
    static let powerUsageEffectiveness = 1.5

    func sobrietyPage(_ l: Language) async throws -> Page {
        var body = "<h1>\(l("Sobriété numérique", "Digital sobriety"))</h1>"
        body += "<p>\(l("Ce que coûte le registre en calcul, mesuré par chaque nœud depuis son démarrage : le temps processeur (utilisateur et système) et les transactions appliquées. Chaque transaction est exécutée par tous les validateurs : le coût d'une transaction pour le réseau est la somme des coûts de chaque nœud.", "What the ledger costs in computation, measured by each node since it started: processor time (user and system) and transactions applied. Every transaction is executed by every validator: a transaction's cost to the network is the sum of each node's."))</p>"
        var rows: [[String]] = []
        var perThousand = 0.0
        var counted = 0
        for (address, status) in pool.nodeStatuses {
            guard let status else {
                rows.append([HTML.escape(address.description), "—", "—", "—", "—"])
                continue
            }
            let seconds = Double(status.cpuMilliseconds) / 1_000
            let cost = status.transactionsApplied > 0 ? seconds * 1_000 / Double(status.transactionsApplied) : nil
            if let cost {
                perThousand += cost
                counted += 1
            }
            rows.append([HTML.escape("\(status.partner) (\(address))"), Self.decimal(seconds, 1, l), l.number(status.transactionsApplied),
                         Self.decimal(Double(status.uptimeMilliseconds) / 3_600_000, 2, l), cost.map { Self.decimal($0, 3, l) } ?? "—"])
        }
        body += HTML.table(
            l("Par nœud, depuis son démarrage (le nœud le déclare)", "Per node, since it started (as the node reports)"),
            [l("Nœud", "Node"), l("Temps processeur (s)", "Processor time (s)"), l("Transactions appliquées", "Transactions applied"), l("Heures de fonctionnement", "Hours running"),
             l("Secondes processeur pour 1 000 transactions", "Processor seconds per 1,000 transactions")],
            rows, numeric: [1, 2, 3, 4])
        let energy = perThousand * Self.wattsPerCore * Self.powerUsageEffectiveness / 3_600
        body += HTML.figures([
            (l("Secondes processeur pour 1 000 transactions (tous les nœuds)", "Processor seconds per 1,000 transactions (all nodes)"), counted > 0 ? Self.decimal(perThousand, 2, l) : "—"),
            (l("Énergie estimée pour 1 000 transactions", "Estimated energy per 1,000 transactions"), counted > 0 ? Self.decimal(energy, 3, l) + "\u{00A0}Wh" : "—"),
        ])
        body += "<h2>\(l("Le modèle d'estimation", "The estimation model"))</h2><p>\(l("Énergie = secondes processeur × \(Self.decimal(Self.wattsPerCore, 0, l)) W par cœur occupé (la consommation d'un cœur de serveur au-delà du repos) × \(Self.decimal(Self.powerUsageEffectiveness, 1, l)) (PUE, le surcoût du centre de données) ÷ 3 600. C'est un ordre de grandeur : le temps processeur compte aussi le travail du consensus quand aucune transaction n'arrive, et ni le réseau ni le stockage ne sont comptés.", "Energy = processor seconds × \(Self.decimal(Self.wattsPerCore, 0, l)) W per busy core (a server core's draw above idle) × \(Self.decimal(Self.powerUsageEffectiveness, 1, l)) (PUE, the data centre's overhead) ÷ 3,600. An order of magnitude: processor time also counts the consensus's work when no transaction arrives, and neither network nor storage is counted."))</p>"
        let own = rendered.withLock { $0 }
        let gatewaySeconds = Double(ProcessUsage.cpuMilliseconds()) / 1_000
        body += "<h2>\(l("Ces pages", "These pages"))</h2><p>\(l("Pages rendues sur le serveur, sans JavaScript ni ressource extérieure, graphiques en SVG dans la page ; budget : 100 Ko par page. Une page demandée à nouveau dans les \(PageCache.lifetimeSeconds) secondes est resservie de la mémoire.", "Pages rendered on the server, with no JavaScript and no outside resource, charts as SVG in the page; budget: 100 KB a page. A page asked again within \(PageCache.lifetimeSeconds) seconds is served again from memory."))</p>"
        body += HTML.figures([
            (l("Pages rendues", "Pages rendered"), l.number(own.count)),
            (l("Poids moyen d'une page", "Average page weight"), own.count > 0 ? Self.decimal(Double(own.bytes) / Double(own.count) / 1_024, 1, l) + "\u{00A0}" + l("Ko", "KB") : "—"),
            (l("Temps processeur de la passerelle (s)", "Gateway processor time (s)"), Self.decimal(gatewaySeconds, 1, l)),
        ])
        return Page(title: l("Sobriété", "Sobriety"), body: body)
    }

    static func decimal(_ value: Double, _ digits: Int, _ l: Language) -> String {
        let text = String(format: "%.\(digits)f", value)
        let parts = text.split(separator: ".")
        let whole = Int64(parts[0]).map { l.number($0) } ?? String(parts[0])
        return parts.count > 1 ? whole + l(",", ".") + parts[1] : whole
    }
}
