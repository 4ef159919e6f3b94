// Bank traffic that produces every published event type at least once:
// accounts opened, deposits, withdrawals, a closed account, and transfers
// that complete, fail without moving money, and are refunded. Shared by the
// Node tests; ids carry `tag` so that runs never collide.
//
//   const expected = await bankTraffic(client, 'ce');
//   // expected.transfers: ids of the transfers, all settled on return
export async function bankTraffic(client, tag) {
  const ann = `${tag}-ann`;
  const bob = `${tag}-bob`;
  const usd = `${tag}-usd`;
  const gone = `${tag}-gone`;
  await client.openAccount(ann, { owner: 'Ann' });
  await client.openAccount(bob, { owner: 'Bob' });
  await client.openAccount(usd, { owner: 'Dee', currency: 'USD' });
  await client.openAccount(gone, { owner: 'Gus' });
  await client.deposit(ann, 10000);
  await client.deposit(bob, 300);
  await client.withdraw(ann, 1200);
  await client.closeAccount(gone);
  const transfers = {
    [`${tag}-t-ok`]: [ann, bob, 2500],         // completed
    [`${tag}-t-poor`]: [bob, ann, 999999],     // failed, nothing moved
    [`${tag}-t-usd`]: [ann, usd, 700],         // debited, refunded, failed
    [`${tag}-t-closed`]: [bob, gone, 100],     // debited, refunded, failed
  };
  for (const [id, [from, to, amount]] of Object.entries(transfers)) {
    await client.transfer(from, to, amount, id);
  }
  const settled = {};
  for (const id of Object.keys(transfers)) {
    settled[id] = await client.settledTransfer(id);
  }
  return { accounts: [ann, bob, usd, gone], transfers: settled };
}
