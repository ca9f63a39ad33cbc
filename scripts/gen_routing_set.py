#!/usr/bin/env python3
"""Generate fixtures/routing/: a labelled set of realistic support messages (issue 17).

Deterministic (fixed seed): running it again writes the same files. Eight queues (billing,
refunds, shipping, technical, account, security, sales, feedback), four languages (English,
German, French, Spanish), and the styles support mail really comes in: plain requests,
replies above a quoted history, forwards by a colleague, HTML-only mail from web clients,
terse one-liners from phones, long rambling ones, signatures and disclaimers, typos.
Each message is assembled from many phrasings per queue and language with slot-filled
products, order numbers, amounts, error codes and names, so no two are alike.

    python scripts/gen_routing_set.py [--out fixtures/routing] [--count 360]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

SEED = 20260417
QUEUES = ["billing", "refunds", "shipping", "technical", "account", "security", "sales", "feedback"]
LANGS = ["en"] * 10 + ["de"] * 4 + ["fr"] * 3 + ["es"] * 3

FIRST = [
    "Anna",
    "Ben",
    "Chloé",
    "David",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kenji",
    "Lucía",
    "Marta",
    "Noah",
    "Olga",
    "Pierre",
    "Priya",
    "Rafael",
    "Sofia",
    "Tom",
    "Ursula",
    "Viktor",
    "Wei",
    "Yasmin",
    "Zoe",
    "Mateo",
    "Léa",
    "Lukas",
    "Camille",
    "Diego",
]
LAST = [
    "Müller",
    "Smith",
    "Dubois",
    "García",
    "Rossi",
    "Novak",
    "Okafor",
    "Tanaka",
    "Schneider",
    "Martin",
    "López",
    "Kowalski",
    "Johansson",
    "Fischer",
    "Bernard",
    "Fernández",
    "Nguyen",
    "Becker",
    "Moreau",
    "Silva",
]
DOMAINS = [
    "gmail.com",
    "outlook.com",
    "web.de",
    "gmx.de",
    "orange.fr",
    "yahoo.es",
    "icloud.com",
    "acme-corp.com",
    "bluepeak.io",
    "hotmail.fr",
    "t-online.de",
    "proton.me",
    "company.co.uk",
]
PRODUCTS = [
    "Pro plan",
    "Team plan",
    "Starter plan",
    "Enterprise plan",
    "the mobile app",
    "the desktop app",
    "SyncBox 2",
    "the API",
    "the Chrome extension",
    "Cloud Backup",
]
GOODS = [
    "wireless headphones",
    "standing desk",
    "coffee grinder",
    "running shoes",
    "phone case",
    "office chair",
    "LED lamp",
    "backpack",
    "monitor arm",
    "yoga mat",
    "kettle",
    "keyboard",
]
GOODS_DE = [
    "Kopfhörer",
    "Schreibtisch",
    "Kaffeemühle",
    "Laufschuhe",
    "Handyhülle",
    "Bürostuhl",
    "Lampe",
    "Rucksack",
    "Tastatur",
    "Wasserkocher",
]
GOODS_FR = [
    "casque audio",
    "bureau",
    "moulin à café",
    "chaussures de course",
    "coque de téléphone",
    "chaise de bureau",
    "lampe",
    "sac à dos",
    "clavier",
    "bouilloire",
]
GOODS_ES = [
    "auriculares",
    "escritorio",
    "molinillo de café",
    "zapatillas",
    "funda del móvil",
    "silla de oficina",
    "lámpara",
    "mochila",
    "teclado",
    "hervidor",
]
CARRIERS = ["DHL", "UPS", "FedEx", "DPD", "Hermes", "GLS", "La Poste", "Correos", "Royal Mail"]
ERRORS = [
    "500 Internal Server Error",
    "error 403",
    "ERR_CONNECTION_RESET",
    "error code 0x80070005",
    "'Something went wrong'",
    "a blank white page",
    "502 Bad Gateway",
    "timeout after 30s",
    "'Sync failed (E1042)'",
    "NullPointerException",
    "error 429 Too Many Requests",
]
BROWSERS = [
    "Chrome 124",
    "Firefox",
    "Safari on macOS",
    "Edge",
    "the iOS app",
    "Android 14",
    "Windows 11",
    "Ubuntu 22.04",
]
COMPANIES = [
    "Acme GmbH",
    "Bluepeak Ltd",
    "Nordlicht AG",
    "Soleil SARL",
    "Andes Logística SL",
    "Brightside Inc.",
    "Kestrel Partners",
    "Vertex Studio",
]


def order_no(r: random.Random) -> str:
    return r.choice(["#", "", "ORD-", "A", "no. ", "Nr. "]) + str(r.randint(10000, 9999999))


def invoice_no(r: random.Random) -> str:
    return (
        r.choice(["INV-", "RE-", "F", "#", ""])
        + str(r.randint(2023, 2026))
        + "-"
        + str(r.randint(100, 99999))
    )


def amount(r: random.Random, lang: str) -> str:
    v = r.choice([9.99, 19, 29.9, 49, 79.5, 99, 119.99, 149, 240, 399, 1200])
    if lang == "en":
        return r.choice([f"${v:.2f}", f"£{v:.2f}", f"{v:.2f} USD", f"€{v:.2f}"])
    return r.choice([f"{v:.2f} €".replace(".", ","), f"{v:.2f} EUR".replace(".", ",")])


# Every phrase is a template; slots: {product} {good} {order} {invoice} {amount} {carrier}
# {error} {browser} {company} {days} {n} {month} {email}.
T: dict[str, dict[str, dict[str, list[str]]]] = {
    "billing": {
        "en": {
            "subj": [
                "Question about invoice {invoice}",
                "Charged twice this month",
                "Wrong amount on my bill",
                "Need a VAT invoice",
                "Update billing address",
                "Payment failed for {product}",
                "Invoice missing company details",
                "Why was I charged {amount}?",
                "billing question",
                "Change payment method",
                "Receipt for last payment",
                "Unexpected charge on my card",
            ],
            "open": [
                "I was billed {amount} for {product} but my plan should cost less.",
                "My card was charged twice for the same month, see invoice {invoice}.",
                "Could you send me an invoice with our VAT number on it?",
                "The invoice {invoice} has the wrong company name, it should be {company}.",
                "I need to update the credit card we use for the subscription.",
                "Our finance team needs a copy of the receipts for the last {n} months.",
                "The payment for {product} failed although the card is valid.",
                "I see a charge of {amount} on my statement and don't know what it is for.",
                "We switched to annual billing but were still charged monthly.",
                "Can you change the billing email to {email}?",
                "Please explain the line items on invoice {invoice}, the tax looks wrong.",
            ],
            "detail": [
                "Our VAT ID is DE{n}4471190.",
                "The charge appeared on {month} {days}.",
                "We are on the {product} with {n} seats.",
                "The last four digits of the card are 4{n}9.",
                "Accounting closes the books on Friday.",
                "I attached a screenshot of the bank statement.",
                "Previously the price was lower and nobody told us about an increase.",
                "The billing address is Hauptstraße {n}, Berlin.",
            ],
            "ask": [
                "Can you correct the invoice?",
                "Please fix this and send a corrected invoice.",
                "How do I change the payment method?",
                "Could you look into the billing?",
                "Please let me know what the charge is for.",
                "Can you reissue the invoice?",
            ],
        },
        "de": {
            "subj": [
                "Frage zur Rechnung {invoice}",
                "Doppelte Abbuchung",
                "Falscher Betrag auf der Rechnung",
                "Rechnung mit USt-IdNr. benötigt",
                "Rechnungsadresse ändern",
                "Zahlung fehlgeschlagen",
                "Abbuchung von {amount} unklar",
                "Zahlungsmethode ändern",
            ],
            "open": [
                "mir wurden {amount} für {product} berechnet, das stimmt nicht mit meinem Tarif überein.",
                "meine Kreditkarte wurde diesen Monat zweimal belastet (Rechnung {invoice}).",
                "bitte stellen Sie die Rechnung {invoice} auf {company} aus.",
                "wir benötigen eine Rechnung mit unserer Umsatzsteuer-ID.",
                "die Lastschrift für {product} ist fehlgeschlagen, obwohl das Konto gedeckt ist.",
                "ich möchte die Zahlungsmethode von Kreditkarte auf SEPA-Lastschrift umstellen.",
                "auf meinem Kontoauszug steht eine Abbuchung über {amount}, die ich nicht zuordnen kann.",
            ],
            "detail": [
                "Unsere USt-IdNr. lautet DE{n}4471190.",
                "Die Buchhaltung braucht die Rechnung bis Freitag.",
                "Wir haben {n} Lizenzen im {product}.",
                "Die Abbuchung war am {days}. {month}.",
            ],
            "ask": [
                "Können Sie die Rechnung korrigieren?",
                "Bitte senden Sie uns eine korrigierte Rechnung.",
                "Wie kann ich die Zahlungsart ändern?",
                "Bitte prüfen Sie die Abrechnung.",
            ],
        },
        "fr": {
            "subj": [
                "Question sur la facture {invoice}",
                "Double prélèvement",
                "Montant incorrect sur la facture",
                "Facture avec numéro de TVA",
                "Changer l'adresse de facturation",
                "Échec du paiement",
            ],
            "open": [
                "j'ai été facturé {amount} pour {product}, ce n'est pas le tarif convenu.",
                "ma carte a été débitée deux fois ce mois-ci (facture {invoice}).",
                "pourriez-vous établir la facture {invoice} au nom de {company} ?",
                "nous avons besoin d'une facture avec notre numéro de TVA intracommunautaire.",
                "le prélèvement pour {product} a échoué alors que la carte est valide.",
                "je vois un débit de {amount} sur mon relevé bancaire que je ne comprends pas.",
            ],
            "detail": [
                "Notre numéro de TVA est FR{n}4471190.",
                "Le débit date du {days} {month}.",
                "Nous avons {n} utilisateurs sur le {product}.",
                "Notre comptable attend ce document.",
            ],
            "ask": [
                "Pouvez-vous corriger la facture ?",
                "Merci de m'envoyer une facture rectifiée.",
                "Comment changer le moyen de paiement ?",
                "Pouvez-vous vérifier la facturation ?",
            ],
        },
        "es": {
            "subj": [
                "Consulta sobre la factura {invoice}",
                "Cobro duplicado",
                "Importe incorrecto en la factura",
                "Necesito factura con NIF",
                "Cambiar datos de facturación",
                "Pago rechazado",
            ],
            "open": [
                "me han cobrado {amount} por {product} y no corresponde a mi plan.",
                "me cobraron dos veces este mes en la tarjeta (factura {invoice}).",
                "necesito que la factura {invoice} salga a nombre de {company}.",
                "necesitamos una factura con nuestro NIF para contabilidad.",
                "el pago de {product} fue rechazado aunque la tarjeta es válida.",
                "veo un cargo de {amount} en mi extracto que no reconozco.",
            ],
            "detail": [
                "Nuestro NIF es B{n}4471190.",
                "El cargo es del {days} de {month}.",
                "Tenemos {n} usuarios en el {product}.",
                "Contabilidad lo necesita esta semana.",
            ],
            "ask": [
                "¿Pueden corregir la factura?",
                "Por favor envíenme una factura corregida.",
                "¿Cómo cambio el método de pago?",
                "¿Pueden revisar el cobro?",
            ],
        },
    },
    "refunds": {
        "en": {
            "subj": [
                "Refund request",
                "Request a refund for order {order}",
                "I want my money back",
                "Cancel and refund",
                "Refund not received yet",
                "Return and refund for {good}",
                "Still waiting for my refund",
                "refund pls",
                "Money back guarantee",
                "Refund for unused subscription",
            ],
            "open": [
                "I would like a refund for order {order}, the {good} arrived broken.",
                "I cancelled my {product} subscription within the trial but was still charged {amount}. Please refund it.",
                "I returned the {good} {days} days ago and have not received my refund yet.",
                "Please cancel my order {order} and refund the {amount}.",
                "You promised a 30-day money back guarantee, I want to use it.",
                "The refund you confirmed two weeks ago never reached my account.",
                "I want my money back, the {good} is nothing like the description.",
                "Could you refund the unused months of my annual {product}?",
                "The item was defective so I sent it back; when will I get the money?",
            ],
            "detail": [
                "The return tracking number is 1Z{n}99A.",
                "I paid {amount} with PayPal.",
                "The package was returned via {carrier}.",
                "I have the return label receipt.",
                "It has been more than {days} days.",
                "My bank says nothing has been credited.",
            ],
            "ask": [
                "Please process the refund as soon as possible.",
                "When will the money be back on my card?",
                "Can you confirm the refund?",
                "Please refund me to the original payment method.",
            ],
        },
        "de": {
            "subj": [
                "Rückerstattung für Bestellung {order}",
                "Geld zurück",
                "Erstattung noch nicht erhalten",
                "Widerruf und Rückzahlung",
                "Rücksendung {good} – Erstattung",
            ],
            "open": [
                "ich möchte mein Geld für die Bestellung {order} zurück, die {good} kam beschädigt an.",
                "ich habe den Artikel vor {days} Tagen zurückgeschickt und noch keine Erstattung bekommen.",
                "hiermit widerrufe ich den Kauf von {product} und bitte um Rückzahlung von {amount}.",
                "die bestätigte Rückerstattung ist bis heute nicht auf meinem Konto eingegangen.",
                "bitte stornieren Sie die Bestellung {order} und erstatten Sie den Betrag.",
            ],
            "detail": [
                "Die Rücksendung ging per {carrier} raus.",
                "Bezahlt habe ich {amount} per PayPal.",
                "Die Sendungsnummer der Retoure ist {n}00{n}.",
                "Das ist jetzt über {days} Tage her.",
            ],
            "ask": [
                "Bitte erstatten Sie mir den Betrag.",
                "Wann bekomme ich mein Geld zurück?",
                "Bitte bestätigen Sie die Rückerstattung.",
            ],
        },
        "fr": {
            "subj": [
                "Demande de remboursement",
                "Remboursement commande {order}",
                "Je n'ai pas reçu mon remboursement",
                "Annulation et remboursement",
                "Retour {good} et remboursement",
            ],
            "open": [
                "je souhaite être remboursé pour la commande {order}, le {good} est arrivé cassé.",
                "j'ai renvoyé l'article il y a {days} jours et je n'ai toujours pas été remboursé.",
                "merci d'annuler ma commande {order} et de me rembourser {amount}.",
                "le remboursement confirmé n'est jamais arrivé sur mon compte.",
                "je veux récupérer mon argent, le produit ne correspond pas à la description.",
            ],
            "detail": [
                "Le colis a été renvoyé par {carrier}.",
                "J'ai payé {amount} par carte.",
                "Cela fait plus de {days} jours.",
            ],
            "ask": [
                "Merci de procéder au remboursement.",
                "Quand serai-je remboursé ?",
                "Pouvez-vous confirmer le remboursement ?",
            ],
        },
        "es": {
            "subj": [
                "Solicitud de reembolso",
                "Reembolso del pedido {order}",
                "No he recibido el reembolso",
                "Quiero que me devuelvan el dinero",
                "Devolución de {good}",
            ],
            "open": [
                "quiero el reembolso del pedido {order}, el {good} llegó roto.",
                "devolví el artículo hace {days} días y todavía no me han devuelto el dinero.",
                "por favor cancelen el pedido {order} y reembolsen los {amount}.",
                "el reembolso que confirmaron nunca llegó a mi cuenta.",
                "quiero que me devuelvan el dinero, el producto no es como en la descripción.",
            ],
            "detail": [
                "Lo envié de vuelta por {carrier}.",
                "Pagué {amount} con tarjeta.",
                "Ya han pasado más de {days} días.",
            ],
            "ask": [
                "Por favor procesen el reembolso.",
                "¿Cuándo recibiré el dinero?",
                "¿Pueden confirmar la devolución del importe?",
            ],
        },
    },
    "shipping": {
        "en": {
            "subj": [
                "Where is my order {order}?",
                "Package not delivered",
                "Tracking shows no update",
                "Order {order} delayed",
                "Wrong item received",
                "Change delivery address",
                "Parcel marked delivered but not here",
                "shipping status?",
                "When will my {good} ship?",
                "Missing item in package",
            ],
            "open": [
                "My order {order} was supposed to arrive {days} days ago and the tracking hasn't moved.",
                "The {carrier} tracking says delivered but there is no parcel at my door.",
                "I ordered a {good} but received a completely different item.",
                "Can I still change the delivery address for order {order}?",
                "The package arrived but the {good} was missing from the box.",
                "When will order {order} be shipped? It still says processing.",
                "The courier left a note but the pickup point is closed.",
                "Your website says 2-3 day delivery, it has been {days} days.",
            ],
            "detail": [
                "The tracking number is {n}7731{n}.",
                "I live at Rue de la Paix {n}, apartment {days}.",
                "It was a birthday present so I need it by {month} {days}.",
                "The carrier is {carrier}.",
                "My neighbours did not take it either.",
            ],
            "ask": [
                "Can you check with the carrier?",
                "Please send a replacement.",
                "Where is my package?",
                "Can you give me an update on the delivery?",
            ],
        },
        "de": {
            "subj": [
                "Wo bleibt meine Bestellung {order}?",
                "Paket nicht angekommen",
                "Lieferung verspätet",
                "Falscher Artikel geliefert",
                "Lieferadresse ändern",
                "Sendungsverfolgung ohne Update",
            ],
            "open": [
                "meine Bestellung {order} sollte vor {days} Tagen ankommen, die Sendungsverfolgung zeigt nichts Neues.",
                "laut {carrier} wurde das Paket zugestellt, es ist aber nicht da.",
                "ich habe {good} bestellt, aber einen anderen Artikel bekommen.",
                "kann ich die Lieferadresse für Bestellung {order} noch ändern?",
                "im Paket fehlte die {good}.",
                "wann wird meine Bestellung {order} versendet?",
            ],
            "detail": [
                "Die Sendungsnummer ist {n}7731{n}.",
                "Der Versand erfolgt mit {carrier}.",
                "Ich brauche es bis zum {days}. {month}.",
            ],
            "ask": [
                "Können Sie beim Versanddienstleister nachfragen?",
                "Bitte schicken Sie Ersatz.",
                "Wann kommt mein Paket?",
            ],
        },
        "fr": {
            "subj": [
                "Où est ma commande {order} ?",
                "Colis non livré",
                "Retard de livraison",
                "Mauvais article reçu",
                "Changer l'adresse de livraison",
                "Suivi du colis bloqué",
            ],
            "open": [
                "ma commande {order} devait arriver il y a {days} jours et le suivi ne bouge plus.",
                "{carrier} indique que le colis est livré mais je n'ai rien reçu.",
                "j'ai commandé un {good} et j'ai reçu un autre article.",
                "puis-je encore modifier l'adresse de livraison de la commande {order} ?",
                "quand ma commande {order} sera-t-elle expédiée ?",
            ],
            "detail": [
                "Le numéro de suivi est {n}7731{n}.",
                "Le transporteur est {carrier}.",
                "J'en ai besoin avant le {days} {month}.",
            ],
            "ask": [
                "Pouvez-vous vérifier auprès du transporteur ?",
                "Merci d'envoyer un remplacement.",
                "Où en est la livraison ?",
            ],
        },
        "es": {
            "subj": [
                "¿Dónde está mi pedido {order}?",
                "Paquete no entregado",
                "Envío retrasado",
                "Recibí un artículo equivocado",
                "Cambiar dirección de envío",
                "El seguimiento no avanza",
            ],
            "open": [
                "mi pedido {order} tenía que llegar hace {days} días y el seguimiento no se actualiza.",
                "{carrier} dice que está entregado pero no tengo el paquete.",
                "pedí {good} y me llegó otro artículo.",
                "¿puedo cambiar todavía la dirección de entrega del pedido {order}?",
                "¿cuándo enviarán mi pedido {order}?",
            ],
            "detail": [
                "El número de seguimiento es {n}7731{n}.",
                "La empresa de transporte es {carrier}.",
                "Lo necesito antes del {days} de {month}.",
            ],
            "ask": [
                "¿Pueden consultar con la agencia de transporte?",
                "Por favor envíen un reemplazo.",
                "¿Dónde está mi paquete?",
            ],
        },
    },
    "technical": {
        "en": {
            "subj": [
                "App crashes on startup",
                "Error when exporting",
                "{error} in the dashboard",
                "Sync not working",
                "Bug: cannot upload files",
                "API returns {error}",
                "Integration broken since update",
                "Page won't load",
                "something is broken",
                "Feature not working after update",
            ],
            "open": [
                "Since the last update {product} crashes as soon as I open it on {browser}.",
                "When I try to export a report I get {error}.",
                "The dashboard shows {error} since this morning.",
                "Files stopped syncing between my laptop and {product}.",
                "Uploading anything bigger than {n} MB fails with {error}.",
                "Our webhook integration stopped receiving events after your release yesterday.",
                "The search returns no results even for items I can see in the list.",
                "Calls to the API endpoint /v2/items fail with {error}.",
                "After logging in I only get {error} on {browser}.",
            ],
            "detail": [
                "I already cleared the cache and reinstalled.",
                "It happens on {browser} too.",
                "Version 4.{n}.2, build {days}{n}.",
                "Steps: open settings, click export, choose CSV.",
                "It worked fine until {month} {days}.",
                "Our whole team of {n} people is affected.",
                "The console shows: TypeError: cannot read properties of undefined.",
            ],
            "ask": [
                "Is this a known issue?",
                "Can you fix this quickly? We are blocked.",
                "Please advise how to work around it.",
                "Do you need logs from me?",
            ],
        },
        "de": {
            "subj": [
                "App stürzt ab",
                "Fehler beim Export",
                "Synchronisierung funktioniert nicht",
                "Fehlermeldung {error}",
                "Seite lädt nicht",
                "Problem nach dem Update",
            ],
            "open": [
                "seit dem letzten Update stürzt {product} beim Start ab ({browser}).",
                "beim Export eines Berichts erscheint {error}.",
                "die Synchronisierung zwischen Laptop und {product} funktioniert nicht mehr.",
                "beim Hochladen größerer Dateien bekomme ich {error}.",
                "die Schnittstelle liefert seit gestern {error}.",
            ],
            "detail": [
                "Cache geleert und neu installiert habe ich schon.",
                "Betroffen sind {n} Kollegen.",
                "Version 4.{n}.2 unter {browser}.",
                "Bis zum {days}. {month} lief alles.",
            ],
            "ask": [
                "Ist das ein bekannter Fehler?",
                "Bitte um schnelle Hilfe, wir können nicht arbeiten.",
                "Brauchen Sie Logdateien?",
            ],
        },
        "fr": {
            "subj": [
                "L'application plante",
                "Erreur lors de l'export",
                "La synchronisation ne marche plus",
                "Message d'erreur {error}",
                "Bug après la mise à jour",
            ],
            "open": [
                "depuis la dernière mise à jour, {product} plante au démarrage sur {browser}.",
                "quand j'exporte un rapport j'obtiens {error}.",
                "la synchronisation entre mon ordinateur et {product} ne fonctionne plus.",
                "l'envoi de fichiers échoue avec {error}.",
                "l'API renvoie {error} depuis hier.",
            ],
            "detail": [
                "J'ai déjà vidé le cache et réinstallé.",
                "Toute l'équipe ({n} personnes) est bloquée.",
                "Version 4.{n}.2 sur {browser}.",
            ],
            "ask": [
                "Est-ce un problème connu ?",
                "Pouvez-vous corriger rapidement ?",
                "Avez-vous besoin des journaux ?",
            ],
        },
        "es": {
            "subj": [
                "La aplicación se cierra",
                "Error al exportar",
                "La sincronización no funciona",
                "Mensaje de error {error}",
                "Fallo después de la actualización",
            ],
            "open": [
                "desde la última actualización {product} se cierra al abrirlo en {browser}.",
                "al exportar un informe me aparece {error}.",
                "la sincronización entre el portátil y {product} dejó de funcionar.",
                "al subir archivos obtengo {error}.",
                "la API devuelve {error} desde ayer.",
            ],
            "detail": [
                "Ya borré la caché y reinstalé.",
                "Afecta a {n} personas del equipo.",
                "Versión 4.{n}.2 en {browser}.",
            ],
            "ask": [
                "¿Es un error conocido?",
                "¿Pueden solucionarlo pronto?",
                "¿Necesitan los registros?",
            ],
        },
    },
    "account": {
        "en": {
            "subj": [
                "Can't log in",
                "Password reset email not arriving",
                "Locked out of my account",
                "Change email address on account",
                "Delete my account",
                "2FA codes not working",
                "Add a user to our team account",
                "login problem",
                "Account suspended?",
                "Username change",
            ],
            "open": [
                "I can't log in anymore, it says my password is incorrect even after resetting it.",
                "The password reset email never arrives, I checked the spam folder.",
                "My account got locked after too many attempts.",
                "I lost my phone and can no longer get the two-factor codes.",
                "Please change the email address of my account to {email}.",
                "I would like to close my account and delete my data.",
                "How do I add {n} colleagues to our team account?",
                "I signed up with Google and now can't set a password.",
                "My account shows as suspended and I don't know why.",
            ],
            "detail": [
                "My username is {email}.",
                "I signed up in {month}.",
                "I tried on {browser} and on my phone.",
                "I still have access to my old email address.",
            ],
            "ask": [
                "Can you unlock my account?",
                "Please help me get back in.",
                "How do I do that?",
                "Please confirm when it is done.",
            ],
        },
        "de": {
            "subj": [
                "Login nicht möglich",
                "Passwort zurücksetzen funktioniert nicht",
                "Konto gesperrt",
                "E-Mail-Adresse ändern",
                "Konto löschen",
                "Zwei-Faktor-Code kommt nicht an",
            ],
            "open": [
                "ich kann mich nicht mehr anmelden, das Passwort wird als falsch angezeigt.",
                "die E-Mail zum Zurücksetzen des Passworts kommt nicht an.",
                "mein Konto wurde nach mehreren Fehlversuchen gesperrt.",
                "ich habe mein Handy verloren und bekomme keine Zwei-Faktor-Codes mehr.",
                "bitte ändern Sie die E-Mail-Adresse meines Kontos auf {email}.",
                "bitte löschen Sie mein Benutzerkonto und alle Daten.",
            ],
            "detail": ["Mein Benutzername ist {email}.", "Ich habe es mit {browser} probiert."],
            "ask": [
                "Können Sie mein Konto entsperren?",
                "Bitte helfen Sie mir beim Login.",
                "Bitte bestätigen Sie die Änderung.",
            ],
        },
        "fr": {
            "subj": [
                "Impossible de me connecter",
                "Réinitialisation du mot de passe",
                "Compte bloqué",
                "Changer l'adresse e-mail du compte",
                "Supprimer mon compte",
                "Code de double authentification",
            ],
            "open": [
                "je n'arrive plus à me connecter, mon mot de passe est refusé.",
                "je ne reçois pas l'e-mail de réinitialisation du mot de passe.",
                "mon compte est bloqué après plusieurs tentatives.",
                "j'ai perdu mon téléphone et je ne reçois plus les codes de double authentification.",
                "merci de supprimer mon compte et mes données.",
            ],
            "detail": ["Mon identifiant est {email}.", "J'ai essayé avec {browser}."],
            "ask": ["Pouvez-vous débloquer mon compte ?", "Merci de m'aider à me reconnecter."],
        },
        "es": {
            "subj": [
                "No puedo iniciar sesión",
                "No llega el correo para restablecer la contraseña",
                "Cuenta bloqueada",
                "Cambiar el correo de la cuenta",
                "Eliminar mi cuenta",
            ],
            "open": [
                "no puedo iniciar sesión, dice que la contraseña es incorrecta.",
                "no me llega el correo para restablecer la contraseña.",
                "mi cuenta se bloqueó después de varios intentos.",
                "perdí el móvil y ya no recibo los códigos de verificación en dos pasos.",
                "quiero eliminar mi cuenta y mis datos.",
            ],
            "detail": ["Mi usuario es {email}.", "Lo intenté desde {browser}."],
            "ask": ["¿Pueden desbloquear mi cuenta?", "Ayúdenme a entrar, por favor."],
        },
    },
    "security": {
        "en": {
            "subj": [
                "Security vulnerability report",
                "Possible XSS in {product}",
                "Responsible disclosure: IDOR",
                "Phishing email pretending to be you",
                "Suspicious login to my account",
                "Exposed API keys in your public repo",
                "Bug bounty submission",
                "Someone accessed my account",
                "[security] open redirect",
            ],
            "open": [
                "I found a stored cross-site scripting vulnerability in the comment field of {product}.",
                "While testing I noticed that changing the id parameter in /api/orders lets me read other customers' orders (IDOR).",
                "I received a phishing email that pretends to come from your company and asks for my password.",
                "There was a login to my account from an unknown location, I did not do that.",
                "Your public GitHub repository contains what looks like live AWS access keys.",
                "I would like to responsibly disclose a vulnerability that allows account takeover.",
                "Your login page is vulnerable to an open redirect via the next= parameter.",
                "Someone changed my password and email, I think my account was hacked.",
            ],
            "detail": [
                "Proof of concept: <script>alert(document.domain)</script> in the name field.",
                "I have not shared this with anyone and will wait 90 days before publishing.",
                "CVSS estimate 8.1 (high).",
                "The login came from IP 203.0.113.{n}.",
                "The sender address was support@{company_dom}-secure.com.",
                "Please treat this report as confidential.",
            ],
            "ask": [
                "Please confirm receipt and let me know your disclosure policy.",
                "Is there a bug bounty program?",
                "Please secure my account immediately.",
                "Who is the right security contact?",
            ],
        },
        "de": {
            "subj": [
                "Sicherheitslücke gefunden",
                "Verdächtiger Login",
                "Phishing-Mail in Ihrem Namen",
                "Mein Konto wurde gehackt",
                "Meldung einer Schwachstelle",
            ],
            "open": [
                "ich habe eine Sicherheitslücke (XSS) in {product} gefunden.",
                "in meinem Konto gab es eine Anmeldung aus einem unbekannten Land.",
                "ich habe eine Phishing-Mail erhalten, die vorgibt von Ihnen zu sein.",
                "jemand hat mein Passwort geändert, ich glaube mein Konto wurde gehackt.",
                "über den Parameter id kann man fremde Bestellungen einsehen.",
            ],
            "detail": [
                "Die Anmeldung kam von der IP 203.0.113.{n}.",
                "Ich veröffentliche nichts vor einer Behebung.",
                "Den Proof of Concept sende ich gern verschlüsselt.",
            ],
            "ask": ["Bitte bestätigen Sie den Eingang.", "Bitte sichern Sie mein Konto sofort."],
        },
        "fr": {
            "subj": [
                "Signalement de vulnérabilité",
                "Connexion suspecte",
                "E-mail de phishing à votre nom",
                "Mon compte a été piraté",
            ],
            "open": [
                "j'ai découvert une faille de sécurité (XSS) dans {product}.",
                "une connexion inconnue a eu lieu sur mon compte depuis l'étranger.",
                "j'ai reçu un e-mail d'hameçonnage qui se fait passer pour vous.",
                "quelqu'un a modifié mon mot de passe, mon compte a été piraté.",
            ],
            "detail": [
                "La connexion venait de l'adresse IP 203.0.113.{n}.",
                "Je ne publierai rien avant correction.",
            ],
            "ask": [
                "Merci de confirmer la réception.",
                "Merci de sécuriser mon compte au plus vite.",
            ],
        },
        "es": {
            "subj": [
                "Reporte de vulnerabilidad",
                "Inicio de sesión sospechoso",
                "Correo de phishing con su nombre",
                "Me han hackeado la cuenta",
            ],
            "open": [
                "encontré una vulnerabilidad de seguridad (XSS) en {product}.",
                "hubo un inicio de sesión en mi cuenta desde un país desconocido.",
                "recibí un correo de phishing que se hace pasar por ustedes.",
                "alguien cambió mi contraseña, creo que me hackearon la cuenta.",
            ],
            "detail": [
                "El acceso vino de la IP 203.0.113.{n}.",
                "No publicaré nada hasta que lo corrijan.",
            ],
            "ask": [
                "Por favor confirmen la recepción.",
                "Aseguren mi cuenta cuanto antes, por favor.",
            ],
        },
    },
    "sales": {
        "en": {
            "subj": [
                "Pricing for {n} users",
                "Enterprise plan quote",
                "Volume discount?",
                "Demo request",
                "Interested in {product}",
                "Question before buying",
                "Reseller partnership",
                "Custom contract and SLA",
                "Quote for our team",
            ],
            "open": [
                "We are a team of {n} people at {company} and are evaluating {product}.",
                "Could you send us a quote for the Enterprise plan for {n} seats?",
                "Do you offer discounts for non-profits or education?",
                "I'd like to book a demo for our operations team next week.",
                "Before we buy: does {product} support single sign-on and data residency in the EU?",
                "We are interested in becoming a reseller in Spain and Portugal.",
                "What would an annual contract with an SLA cost for {n} users?",
            ],
            "detail": [
                "Our budget is approved for this quarter.",
                "We currently use a competitor and plan to switch.",
                "Procurement needs a formal quote and your security questionnaire.",
                "We'd start with {n} licences and grow from there.",
            ],
            "ask": [
                "Can someone from sales contact me?",
                "Please send pricing details.",
                "When could we schedule a call?",
                "Looking forward to your offer.",
            ],
        },
        "de": {
            "subj": [
                "Angebot für {n} Nutzer",
                "Preisanfrage Enterprise",
                "Demo-Termin",
                "Interesse an {product}",
                "Mengenrabatt",
            ],
            "open": [
                "wir sind ein Team von {n} Personen bei {company} und prüfen {product}.",
                "bitte senden Sie uns ein Angebot für den Enterprise-Tarif mit {n} Lizenzen.",
                "gibt es Rabatte für gemeinnützige Organisationen?",
                "wir würden gern eine Demo für unser Team vereinbaren.",
            ],
            "detail": [
                "Das Budget ist für dieses Quartal freigegeben.",
                "Der Einkauf braucht ein formelles Angebot.",
            ],
            "ask": [
                "Bitte kontaktieren Sie mich für ein Angebot.",
                "Wann hätten Sie Zeit für ein Gespräch?",
            ],
        },
        "fr": {
            "subj": [
                "Devis pour {n} utilisateurs",
                "Tarifs Enterprise",
                "Demande de démo",
                "Intérêt pour {product}",
            ],
            "open": [
                "nous sommes une équipe de {n} personnes chez {company} et nous évaluons {product}.",
                "pourriez-vous nous envoyer un devis pour l'offre Enterprise ({n} licences) ?",
                "proposez-vous des remises pour les associations ?",
                "nous aimerions organiser une démonstration pour notre équipe.",
            ],
            "detail": [
                "Le budget est validé pour ce trimestre.",
                "Nos achats ont besoin d'un devis formel.",
            ],
            "ask": ["Un commercial peut-il me contacter ?", "Merci de m'envoyer vos tarifs."],
        },
        "es": {
            "subj": [
                "Presupuesto para {n} usuarios",
                "Precios del plan Enterprise",
                "Solicitud de demo",
                "Interés en {product}",
            ],
            "open": [
                "somos un equipo de {n} personas en {company} y estamos evaluando {product}.",
                "¿podrían enviarnos un presupuesto del plan Enterprise para {n} licencias?",
                "¿ofrecen descuentos para organizaciones sin ánimo de lucro?",
                "nos gustaría agendar una demo para el equipo.",
            ],
            "detail": [
                "Tenemos presupuesto aprobado este trimestre.",
                "Compras necesita una oferta formal.",
            ],
            "ask": ["¿Puede contactarme alguien de ventas?", "Envíenme los precios, por favor."],
        },
    },
    "feedback": {
        "en": {
            "subj": [
                "Feedback on the new design",
                "Love the product!",
                "Suggestion for {product}",
                "Feature request: dark mode",
                "Thank you to your support team",
                "Not happy with the new layout",
                "Idea for improvement",
                "Quick feedback",
                "Kudos",
            ],
            "open": [
                "Just wanted to say the new version of {product} is fantastic, great job.",
                "I have a suggestion: it would be great to have a dark mode in {product}.",
                "Your colleague helped me yesterday and was incredibly patient, thank you!",
                "Honestly the new layout is confusing, I liked the old menu better.",
                "It would be nice if the reports could be scheduled weekly.",
                "We've been customers for {n} years and really enjoy using {product}.",
                "Small idea: let us pin favourite projects to the top of the list.",
            ],
            "detail": [
                "Everyone in our office agrees.",
                "Keep up the good work.",
                "The onboarding was the smoothest I've seen.",
                "The icons are hard to tell apart though.",
            ],
            "ask": [
                "No reply needed.",
                "Hope you consider it!",
                "Thanks for listening.",
                "Just my two cents.",
            ],
        },
        "de": {
            "subj": [
                "Feedback zum neuen Design",
                "Lob an das Team",
                "Verbesserungsvorschlag",
                "Wunsch: Dunkelmodus",
            ],
            "open": [
                "die neue Version von {product} gefällt mir sehr gut, tolle Arbeit.",
                "ein Vorschlag: ein Dunkelmodus wäre großartig.",
                "Ihr Kollege hat mir gestern sehr geduldig geholfen, vielen Dank!",
                "ehrlich gesagt finde ich das neue Layout unübersichtlich.",
            ],
            "detail": ["Das ganze Büro sieht das so.", "Weiter so!"],
            "ask": ["Keine Antwort nötig.", "Vielleicht ist das eine Anregung."],
        },
        "fr": {
            "subj": [
                "Retour sur le nouveau design",
                "Bravo à l'équipe",
                "Suggestion d'amélioration",
                "Idée : mode sombre",
            ],
            "open": [
                "la nouvelle version de {product} est excellente, bravo.",
                "une suggestion : un mode sombre serait très apprécié.",
                "votre collègue m'a aidé hier avec beaucoup de patience, merci !",
                "franchement la nouvelle interface est moins claire qu'avant.",
            ],
            "detail": ["Toute l'équipe est d'accord.", "Continuez comme ça !"],
            "ask": ["Pas besoin de réponse.", "En espérant que cela aide."],
        },
        "es": {
            "subj": [
                "Opinión sobre el nuevo diseño",
                "Felicitaciones al equipo",
                "Sugerencia de mejora",
                "Idea: modo oscuro",
            ],
            "open": [
                "la nueva versión de {product} me encanta, buen trabajo.",
                "una sugerencia: sería genial tener modo oscuro.",
                "su compañero me ayudó ayer con mucha paciencia, ¡gracias!",
                "sinceramente el nuevo diseño es más confuso que el anterior.",
            ],
            "detail": ["Todo el equipo opina igual.", "¡Sigan así!"],
            "ask": ["No hace falta responder.", "Ojalá lo tengan en cuenta."],
        },
    },
}

GREET = {
    "en": [
        "Hi,",
        "Hello,",
        "Hi there,",
        "Dear Support,",
        "Hello team,",
        "Good morning,",
        "Hey,",
        "Dear Sir or Madam,",
    ],
    "de": [
        "Hallo,",
        "Guten Tag,",
        "Sehr geehrte Damen und Herren,",
        "Hallo Support-Team,",
        "Moin,",
    ],
    "fr": ["Bonjour,", "Madame, Monsieur,", "Bonjour à l'équipe,", "Salut,"],
    "es": ["Hola,", "Buenos días,", "Estimado equipo,", "Hola equipo de soporte,"],
}
CLOSE = {
    "en": [
        "Thanks,",
        "Best regards,",
        "Cheers,",
        "Kind regards,",
        "Thank you in advance,",
        "Regards,",
    ],
    "de": ["Viele Grüße", "Mit freundlichen Grüßen", "Danke und Gruß", "Beste Grüße"],
    "fr": ["Cordialement,", "Merci d'avance,", "Bien à vous,", "Bonne journée,"],
    "es": ["Saludos,", "Gracias de antemano,", "Un saludo,", "Atentamente,"],
}
MONTHS = {
    "en": ["January", "March", "April", "June", "September", "November"],
    "de": ["Januar", "März", "April", "Juni", "September", "November"],
    "fr": ["janvier", "mars", "avril", "juin", "septembre", "novembre"],
    "es": ["enero", "marzo", "abril", "junio", "septiembre", "noviembre"],
}
CAP_OPEN = {"en": False, "de": True, "fr": True, "es": True}
"""In de/fr/es the opener follows a greeting with a comma, so it starts lower-case in the
template and is capitalised when there is no greeting."""
QUOTE_INTRO = {
    "en": "On {date}, {agent} <support@example.test> wrote:",
    "de": "Am {date} schrieb {agent} <support@example.test>:",
    "fr": "Le {date}, {agent} <support@example.test> a écrit :",
    "es": "El {date}, {agent} <support@example.test> escribió:",
}
AGENT_REPLY = {
    "en": [
        "Thanks for reaching out. Could you send us a few more details so we can look into this?",
        "We're sorry for the trouble. Can you confirm the email address on the account?",
        "Thank you for your message. We have forwarded this to the responsible team.",
    ],
    "de": [
        "Vielen Dank für Ihre Nachricht. Können Sie uns weitere Details schicken?",
        "Danke für Ihre Geduld. Wir haben das an das zuständige Team weitergeleitet.",
    ],
    "fr": [
        "Merci pour votre message. Pouvez-vous nous donner plus de détails ?",
        "Nous avons transmis votre demande à l'équipe concernée.",
    ],
    "es": [
        "Gracias por su mensaje. ¿Puede enviarnos más detalles?",
        "Hemos enviado su consulta al equipo responsable.",
    ],
}
FOLLOW_UP = {
    "en": [
        "Any update on this?",
        "Following up on my earlier email.",
        "Still not solved, see below.",
        "Sure, here are the details:",
        "I'm writing again because nothing happened.",
    ],
    "de": [
        "Gibt es hierzu schon Neuigkeiten?",
        "Ich melde mich nochmal, siehe unten.",
        "Hier die Details:",
    ],
    "fr": ["Des nouvelles ?", "Je relance ma demande ci-dessous.", "Voici les détails :"],
    "es": ["¿Alguna novedad?", "Vuelvo a escribir, ver abajo.", "Aquí están los detalles:"],
}
FWD_NOTE = {
    "en": [
        "Forwarding this from a customer, can someone take it?",
        "FYI – customer email below.",
        "Hi team, this came to my personal inbox, please handle.",
    ],
    "de": ["Leite ich euch weiter, bitte kümmern.", "Zur Info, Kundenmail unten."],
    "fr": ["Je vous transfère ce message client.", "Pour info, e-mail client ci-dessous."],
    "es": ["Os reenvío esto de un cliente.", "Para vuestra información, correo del cliente abajo."],
}
DISCLAIMER = [
    "This email and any attachments are confidential and intended solely for the addressee. If you "
    "received it in error please notify the sender and delete it.",
    "Diese E-Mail enthält vertrauliche Informationen. Wenn Sie nicht der richtige Adressat sind, "
    "informieren Sie bitte sofort den Absender.",
    "Ce message et ses pièces jointes sont confidentiels.",
    "Please consider the environment before printing this email.",
]
MOBILE = [
    "Sent from my iPhone",
    "Von meinem iPhone gesendet",
    "Envoyé de mon iPhone",
    "Enviado desde mi Android",
    "Sent from Outlook for Android",
    "Get Outlook for iOS",
]


def typo(word: str, r: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = r.randint(1, len(word) - 2)
    kind = r.random()
    if kind < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 0.7:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def add_typos(text: str, r: random.Random, rate: float) -> str:
    return " ".join(typo(w, r) if r.random() < rate else w for w in text.split(" "))


class Slots(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, r: random.Random, lang: str, person: dict[str, str]) -> str:
    good = {"en": GOODS, "de": GOODS_DE, "fr": GOODS_FR, "es": GOODS_ES}[lang]
    company = r.choice(COMPANIES)
    slots = Slots(
        product=r.choice(PRODUCTS),
        good=r.choice(good),
        order=order_no(r),
        invoice=invoice_no(r),
        amount=amount(r, lang),
        carrier=r.choice(CARRIERS),
        error=r.choice(ERRORS),
        browser=r.choice(BROWSERS),
        company=company,
        days=str(r.randint(2, 28)),
        n=str(r.choice([2, 3, 5, 8, 12, 25, 40, 150])),
        month=r.choice(MONTHS[lang]),
        email=person["email"],
        company_dom=company.split()[0].lower(),
    )
    return template.format_map(slots)


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def compose(
    queue: str, lang: str, r: random.Random, person: dict[str, str]
) -> tuple[str, str, str]:
    """(subject, body text, style)."""
    t = T[queue][lang]
    subject = fill(r.choice(t["subj"]), r, lang, person)
    style = r.choices(
        ["plain", "reply", "forward", "html", "terse", "long"], weights=[34, 16, 10, 16, 12, 12]
    )[0]
    opener = fill(r.choice(t["open"]), r, lang, person)
    details = [
        fill(d, r, lang, person)
        for d in r.sample(t["detail"], k=min(len(t["detail"]), r.randint(0, 2)))
    ]
    ask = fill(r.choice(t["ask"]), r, lang, person)
    if style == "long":
        extra = [o for o in t["open"] if o != opener]
        if extra:
            details.append(cap(fill(r.choice(extra), r, lang, person)))
        details += [fill(d, r, lang, person) for d in t["detail"][:2]]
    greeting = r.choice(GREET[lang]) if style != "terse" and r.random() < 0.85 else ""
    first = opener if greeting and CAP_OPEN[lang] else cap(opener)
    if style == "terse":
        words = first.rstrip(".").split()
        first = " ".join(words[: max(5, len(words) * 2 // 3)]).lower()
        lines = [first + " " + ask.lower()]
    else:
        para = [first, *details]
        lines = [greeting, "", " ".join(para), "", ask] if greeting else [" ".join(para), "", ask]
    if r.random() < 0.3 or style == "terse":
        lines = [add_typos(ln, r, 0.06) for ln in lines]
    sign = []
    if style != "terse":
        sign = ["", r.choice(CLOSE[lang]), person["name"]]
        if r.random() < 0.35:
            sign += [
                r.choice(COMPANIES),
                f"+{r.randint(30, 49)} {r.randint(100, 999)} {r.randint(100000, 9999999)}",
            ]
        if r.random() < 0.15:
            sign += ["", r.choice(DISCLAIMER)]
    if style == "terse" or r.random() < 0.1:
        sign += ["", r.choice(MOBILE)]
    body = "\n".join(lines + sign).strip() + "\n"
    if style == "reply":
        date = f"{r.randint(1, 28)}.{r.randint(1, 12)}.2026 {r.randint(8, 18)}:{r.randint(10, 59)}"
        agent = r.choice(
            ["Support", "Mia from Support", "Helpdesk", "Kundenservice", "Service client"]
        )
        quoted = r.choice(AGENT_REPLY[lang]) + "\n\n" + body
        body = (
            r.choice(FOLLOW_UP[lang])
            + "\n\n"
            + QUOTE_INTRO[lang].format(date=date, agent=agent)
            + "\n"
            + "\n".join("> " + ln if ln else ">" for ln in quoted.splitlines())
            + "\n"
        )
        subject = r.choice(["Re: ", "RE: ", "AW: ", "Réf : ", "RE: RE: "]) + subject
    elif style == "forward":
        colleague = r.choice(FIRST)
        body = (
            r.choice(FWD_NOTE[lang])
            + f"\n\n{colleague}\n\n---------- Forwarded message ---------\n"
            f"From: {person['name']} <{person['email']}>\nDate: Mon, {r.randint(1, 28)} Apr 2026 09:{r.randint(10, 59)}\n"
            f"Subject: {subject}\nTo: {colleague.lower()}@example.test\n\n" + body
        )
        subject = r.choice(["Fwd: ", "FW: ", "WG: ", "TR: "]) + subject
    return subject, body, style


def html_of(body: str, r: random.Random) -> str:
    paras = [p for p in body.split("\n\n") if p.strip()]
    inner = "".join(
        "<p>" + p.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>") + "</p>"
        for p in paras
    )
    wrapper = r.choice(
        [
            '<div dir="ltr">{}</div>',
            '<html><head><style>p{{margin:0}}</style></head><body><div style="font-family:Calibri">{}</div></body></html>',
            '<div class="WordSection1">{}<p class="MsoNormal">&nbsp;</p></div>',
        ]
    )
    return wrapper.format(inner)


def person_for(r: random.Random) -> dict[str, str]:
    first, last = r.choice(FIRST), r.choice(LAST)
    local = r.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{r.randint(1, 99)}", first])
    ascii_local = local.lower().translate(str.maketrans("éüöäíóúñ", "euoaioun"))
    return {"name": f"{first} {last}", "email": f"{ascii_local}@{r.choice(DOMAINS)}"}


def build(index: int, queue: str, lang: str, r: random.Random) -> tuple[bytes, str]:
    person = person_for(r)
    subject, body, style = compose(queue, lang, r, person)
    msg = EmailMessage()
    msg["From"] = f"{person['name']} <{person['email']}>"
    msg["To"] = r.choice(
        ["support@example.test", "help@example.test", "hello@example.test", "contact@example.test"]
    )
    msg["Subject"] = subject
    when = datetime(2026, 4, 1, 8, 0, tzinfo=UTC) + timedelta(minutes=37 * index)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = (
        f"<routing-{index:04d}.{r.randint(1000, 9999)}@{person['email'].split('@')[1]}>"
    )
    if style == "reply":
        msg["In-Reply-To"] = f"<ticket-{r.randint(1000, 9999)}@example.test>"
    if style == "html":
        msg.set_content(html_of(body, r), subtype="html")
    elif r.random() < 0.2:
        msg.set_content(body)
        msg.add_alternative(html_of(body, r), subtype="html")
    else:
        msg.set_content(body)
    return bytes(msg), style


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "routing")
    )
    ap.add_argument("--count", type=int, default=360)
    args = ap.parse_args()
    out = Path(args.out)
    msgs = out / "messages"
    if msgs.exists():
        shutil.rmtree(msgs)
    msgs.mkdir(parents=True)
    r = random.Random(SEED)
    random.seed(SEED)  # the email package draws MIME boundaries from the global generator
    lines = []
    for i in range(args.count):
        queue = QUEUES[i % len(QUEUES)]
        lang = r.choice(LANGS)
        raw, style = build(i, queue, lang, r)
        name = f"{i:04d}-{queue}-{lang}.eml"
        (msgs / name).write_bytes(raw)
        lines.append(
            json.dumps({"path": f"messages/{name}", "queue": queue, "tags": [lang, style]})
        )
    (out / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.count} messages to {msgs}")


if __name__ == "__main__":
    main()
