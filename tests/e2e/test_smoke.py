from support.helpers import grant, register


def test_grant_and_revoke(client, seller):
    sid = register(client, seller)
    consent = grant(client, seller, sid)
    r = client.post(f"/v1/consents/{consent['id']}/revoke", headers=seller)
    assert r.status_code == 202
    assert r.json()["consent_ids"] == [consent["id"]]
