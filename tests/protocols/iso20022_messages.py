"""ISO 20022 messages as banks send them (structure per the published pacs/pain schemas), with a
card number and names in the places free text lives, to prove they are not kept."""

from __future__ import annotations

PAN = "4111111111111111"


def pacs008(msg_id: str, e2e: str, uetr: str, amount: str, ccy: str = "EUR", date: str = "2026-12-07") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08">
  <FIToFICstmrCdtTrf>
    <GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-12-07T15:00:00Z</CreDtTm><NbOfTxs>1</NbOfTxs>
      <SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf></GrpHdr>
    <CdtTrfTxInf>
      <PmtId><InstrId>I-{msg_id}</InstrId><EndToEndId>{e2e}</EndToEndId><TxId>T-{msg_id}</TxId><UETR>{uetr}</UETR></PmtId>
      <IntrBkSttlmAmt Ccy="{ccy}">{amount}</IntrBkSttlmAmt><IntrBkSttlmDt>{date}</IntrBkSttlmDt>
      <ChrgBr>SLEV</ChrgBr>
      <Dbtr><Nm>Jane Debtor</Nm></Dbtr><DbtrAcct><Id><IBAN>DE89370400440532013000</IBAN></Id></DbtrAcct>
      <Cdtr><Nm>Carl Creditor</Nm></Cdtr><CdtrAcct><Id><IBAN>FR1420041010050500013M02606</IBAN></Id></CdtrAcct>
      <RmtInf><Ustrd>card {PAN} refund</Ustrd></RmtInf>
    </CdtTrfTxInf>
  </FIToFICstmrCdtTrf>
</Document>
""".encode()


def pacs002(msg_id: str, orig_msg: str, e2e: str, uetr: str, status: str, reason: str = "") -> bytes:
    rsn = f"<StsRsnInf><Rsn><Cd>{reason}</Cd></Rsn></StsRsnInf>" if reason else ""
    return f"""<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10"><FIToFIPmtStsRpt>
<GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-12-07T15:00:01Z</CreDtTm></GrpHdr>
<OrgnlGrpInfAndSts><OrgnlMsgId>{orig_msg}</OrgnlMsgId><OrgnlMsgNmId>pacs.008.001.08</OrgnlMsgNmId></OrgnlGrpInfAndSts>
<TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><OrgnlUETR>{uetr}</OrgnlUETR><TxSts>{status}</TxSts>{rsn}</TxInfAndSts>
</FIToFIPmtStsRpt></Document>""".encode()


def pain001(msg_id: str, e2e: str, amount: str) -> bytes:
    return f"""<?xml version="1.0"?><p:Document xmlns:p="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">
<p:CstmrCdtTrfInitn><p:GrpHdr><p:MsgId>{msg_id}</p:MsgId><p:NbOfTxs>1</p:NbOfTxs><p:InitgPty><p:Nm>Acme Corp</p:Nm></p:InitgPty></p:GrpHdr>
<p:PmtInf><p:PmtInfId>P1</p:PmtInfId><p:PmtMtd>TRF</p:PmtMtd><p:ReqdExctnDt><p:Dt>2026-12-08</p:Dt></p:ReqdExctnDt>
<p:CdtTrfTxInf><p:PmtId><p:EndToEndId>{e2e}</p:EndToEndId></p:PmtId>
<p:Amt><p:InstdAmt Ccy="USD">{amount}</p:InstdAmt></p:Amt><p:Cdtr><p:Nm>Supplier Ltd</p:Nm></p:Cdtr></p:CdtTrfTxInf>
</p:PmtInf></p:CstmrCdtTrfInitn></p:Document>""".encode()


def pain002(msg_id: str, orig_msg: str, e2e: str, status: str) -> bytes:
    return f"""<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"><CstmrPmtStsRpt>
<GrpHdr><MsgId>{msg_id}</MsgId></GrpHdr><OrgnlGrpInfAndSts><OrgnlMsgId>{orig_msg}</OrgnlMsgId></OrgnlGrpInfAndSts>
<OrgnlPmtInfAndSts><TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>{status}</TxSts></TxInfAndSts>
</OrgnlPmtInfAndSts></CstmrPmtStsRpt></Document>""".encode()
